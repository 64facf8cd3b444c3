"""The benchmark's processes: start, talk to, measure and stop them.

Everything the suite runs is a child process that this module started on a
loopback port, reads from ``/proc/<pid>`` (CPU seconds, resident set, and
its peak since the last reset) and stops by its own pid: the fake model
server, SwarmDirector (``swarmdirector serve`` on a fresh SQLite file in a
temporary directory, so it is measured as it ships) and the two workers
(load client, floor) that answer one batch per line.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
FAKE_LLM = REPO.parent / "shared" / "bench" / "fake_llm.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# never let the server under test reach a real provider or read a developer's configuration
LEAKY = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the harness dies (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class BenchError(RuntimeError):
    """The harness cannot go on (a process did not start, a worker did not answer)."""


def fake_llm_path() -> Path:
    if not FAKE_LLM.is_file():
        raise BenchError(
            f"the fake model server is missing: expected {FAKE_LLM} (shared/bench/fake_llm.py, beside this repository)"
        )
    return FAKE_LLM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """A child process started here, its output in ``log``; stopped by its own pid."""

    pipes = False  # stdin and stdout as pipes (workers), or stdout to the log too

    def __init__(
        self, name: str, argv: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if self.pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.pipes else self._log_file,
            stderr=self._log_file,
            preexec_fn=_die_with_parent,  # no process outlives a killed harness
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            if self.popen.stdin is not None:
                self.popen.stdin.close()  # a worker ends when its stdin closes
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log_file.close()


class Worker(Proc):
    """A load client or floor process: one JSON batch in, one JSON line of timelines out."""

    pipes = True

    def _readline(self, timeout: float) -> dict[str, Any]:
        out: IO[bytes] | None = self.popen.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else b""
        if not line:
            raise BenchError(f"{self.name} did not answer within {timeout:g} s:\n{self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def wait_ready(self, timeout: float = 60.0) -> None:
        self._readline(timeout)

    def request(self, batch: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(batch).encode() + b"\n")
        self.popen.stdin.flush()
        runs: list[dict[str, Any]] = self._readline(timeout)["runs"]
        return runs


def wait_http(proc: Proc, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{proc.name} did not answer {url} within {timeout:g} s:\n{proc.log_tail()}")


def start_fake_llm(tmp: Path) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, str(fake_llm_path()), "--host", "127.0.0.1", "--port", str(port)]
    return Proc("fake LLM", argv, tmp / "fake_llm.log"), port


def server_env(tmp: Path, fake_port: int, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_") and k not in LEAKY}
    env.update(
        SWARM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
        SWARM_DEFAULT_MODEL="openai_compatible/fake-t500",
        SWARM_OPENAI_COMPATIBLE_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
        SWARM_SEED_DEMO="false",
        SWARM_LOG_LEVEL=log_level,
        # the admission limits would refuse 200 concurrent runs, and 100 runs a minute
        SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL="100000",
        SWARM_MAX_RUNS_PER_MINUTE="1000000",
        SWARM_SHUTDOWN_GRACE_S="2",
    )
    return env


def start_swarmdirector(tmp: Path, fake_port: int, log_level: str) -> tuple[Proc, int]:
    port = free_port()
    exe = Path(sys.executable).with_name("swarmdirector")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]
    argv += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    # run from the temporary directory: no developer's .env is read
    proc = Proc("SwarmDirector", argv, tmp / "server.log", env=server_env(tmp, fake_port, log_level), cwd=tmp)
    return proc, port


def start_worker(name: str, script: str, args: list[str], tmp: Path) -> Worker:
    argv = [sys.executable, str(BENCH / script), *args]
    return Worker(name, argv, tmp / f"{script}.log", cwd=BENCH)


# -- /proc ---------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def reset_peak(pid: int) -> None:
    """Start a new peak-RSS window: VmHWM drops to the current RSS (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
