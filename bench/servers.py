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
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# never let the server under test reach a real provider or read a developer's configuration
LEAKY = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the harness dies (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class BenchError(RuntimeError):
    """The harness cannot go on (a process did not start, a worker did not answer)."""


def raise_fd_limit() -> int:
    """This process's soft limit on open files raised to its hard one, for itself and the processes it
    starts (W5 holds 10,000 sockets at each end); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_limit(pid: int) -> int | None:
    """The soft limit on open files of a running process (/proc/<pid>/limits); None for unlimited."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


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

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        return self._readline(timeout)

    def request(self, batch: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.ask(batch, timeout)["runs"]
        return runs

    def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One JSON line out, its one JSON line of answer back; an answer with ``error`` stops the bench."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(message).encode() + b"\n")
        self.popen.stdin.flush()
        answer = self._readline(timeout)
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}\n{self.log_tail()}")
        return answer


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
    argv = [sys.executable, "-m", "app.dev.fake_llm", "--host", "127.0.0.1", "--port", str(port)]
    return Proc("fake LLM", argv, tmp / "fake_llm.log", cwd=REPO), port


def server_env(
    tmp: Path, fake_port: int, log_level: str, backend: Backend | None = None, *, patches_off: str = ""
) -> dict[str, str]:
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
    if patches_off:
        env["SWARM_PATCHES_OFF"] = patches_off  # app/patches: a patch left out, to measure what it buys
    if backend is not None and backend.distributed:
        assert backend.store is not None
        env.update(
            SWARM_DATABASE_URL=backend.store.database_url,
            SWARM_REDIS_URL=backend.store.redis_url,
            SWARM_REDIS_PREFIX=backend.store.prefix,
            SWARM_PROCESSES=str(backend.processes),
            # like the admission limits: the default 100 runs executed at once per process would
            # queue half of W2 N=200 in a one-process server (the embedded mode has no such cap)
            SWARM_WORKER_CONCURRENCY="100000",
        )
    return env


def start_swarmdirector(
    tmp: Path, fake_port: int, log_level: str, backend: Backend | None = None, *, patches_off: str = ""
) -> tuple[Proc, int]:
    port = free_port()
    exe = Path(sys.executable).with_name("swarmdirector")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]
    argv += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    # run from the temporary directory: no developer's .env is read
    env = server_env(tmp, fake_port, log_level, backend, patches_off=patches_off)
    proc = Proc("SwarmDirector", argv, tmp / "server.log", env=env, cwd=tmp)
    return proc, port


def wait_listening(proc: Proc, port: int, count: int, timeout: float = 90.0) -> None:
    """Until ``count`` sockets listen on 127.0.0.1:``port`` (one per API process with SO_REUSEPORT).

    The kernel hands connections only to sockets that listen, so before this one process may be
    taking all of them while the others still start.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        if listening_sockets(port) >= count:
            return
        time.sleep(0.2)
    raise BenchError(
        f"{proc.name}: {listening_sockets(port)} of {count} processes listen on port {port} "
        f"after {timeout:g} s:\n{proc.log_tail()}"
    )


def listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN on 127.0.0.1:``port`` (/proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if (f := row.split())[1] == local and f[3] == "0A")


# -- the distributed mode's store: PostgreSQL and Redis ------------------------------------------


@dataclass(slots=True)
class DistributedStore:
    """A fresh PostgreSQL database and Redis key prefix for one benchmark, removed by ``drop``.

    ``admin_url`` is a maintenance database reached with trust authentication
    (``postgresql://postgres@127.0.0.1:5432/test``); the server migrates the new one at start.
    """

    admin_url: str
    redis_url: str
    name: str = ""
    prefix: str = ""

    @property
    def database_url(self) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{self.name}"

    def create(self) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.name, self.prefix = f"bench_{suffix}", f"bench-{suffix}"
        try:
            self._admin(f'CREATE DATABASE "{self.name}"')
        except Exception as exc:
            self.name = ""
            raise BenchError(f"cannot create a database through {self.admin_url}: {exc}") from exc

    def drop(self) -> dict[str, Any]:
        """Drop the database (WITH (FORCE)) and UNLINK every key under the prefix; what was removed."""
        out: dict[str, Any] = {}
        if self.name:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            out["database_dropped"] = self.name
        if self.prefix:
            out["redis_keys_unlinked"] = self._unlink_keys()
        return out

    def cpu_by_pid(self) -> dict[str, dict[int, float]]:
        """CPU seconds of the store's server processes on this machine, by pid: PostgreSQL's
        backends of this database and its shared processes (writer, checkpointer, WAL), and
        redis-server. They share the cores with the server under test but are not its figures;
        the shared ones also serve any other work on the machine.
        """
        out: dict[str, dict[int, float]] = {"postgres": {}, "redis": {}}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
                if comm == "redis-server":
                    out["redis"][int(entry)] = cpu_s(int(entry))
                elif comm == "postgres":
                    title = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if _pg_database(title) in (None, self.name):
                        out["postgres"][int(entry)] = cpu_s(int(entry))
            except OSError:
                continue  # gone meanwhile
        return out

    def _admin(self, sql: str) -> None:
        import asyncio

        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def _unlink_keys(self) -> int:
        from redis import Redis

        client = Redis.from_url(self.redis_url, socket_timeout=10)
        try:
            removed = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(client.unlink(*batch))
            return removed
        finally:
            client.close()


def _pg_database(title: str) -> str | None:
    """The database of a PostgreSQL backend from its process title, or None for a shared process.

    ``postgres: 15/main: <user> <database> <host>(<port>) <state>``; the postmaster and the
    auxiliary processes (``postgres: 15/main: walwriter``) have no client address.
    """
    parts = title.split(": ", 2)
    if len(parts) < 3:
        return None
    words = parts[2].split()
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


@dataclass(slots=True)
class Backend:
    """How the server under test stores and shares: ``embedded`` (SQLite, one process) or ``distributed``."""

    kind: str = "embedded"
    processes: int = 1
    store: DistributedStore | None = None

    @property
    def distributed(self) -> bool:
        return self.kind == "distributed"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.kind, "processes": self.processes}
        if self.store is not None:
            out.update(database=self.store.name, redis_url=self.store.redis_url, redis_prefix=self.store.prefix)
        return out


def start_worker(name: str, script: str, args: list[str], tmp: Path) -> Worker:
    argv = [sys.executable, str(BENCH / script), *args]
    return Worker(name, argv, tmp / f"{script}.log", cwd=BENCH)


# -- /proc ---------------------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (every thread's ``children``), parents first."""
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            out.extend(tree_pids(int(child)))
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds of the whole machine (every CPU): busy (anything not idle or waiting on I/O),
    and stolen by the hypervisor (a virtual machine's CPUs running something else)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


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


# over several processes (a server and its children): CPU and resident sets summed; the peaks too,
# each process's own, so it is an upper bound of the tree's peak if they did not peak together


def sum_cpu_s(pids: list[int]) -> float:
    return sum(cpu_s(p) for p in pids)


def sum_rss_kb(pids: list[int]) -> int:
    return sum(rss_kb(p) for p in pids)


def sum_peak_kb(pids: list[int]) -> int:
    return sum(peak_kb(p) for p in pids)


def reset_peaks(pids: list[int]) -> None:
    for p in pids:
        reset_peak(p)


def sum_fd_count(pids: list[int]) -> int:
    return sum(fd_count(p) for p in pids)
