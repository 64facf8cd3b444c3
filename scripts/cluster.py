"""`make cluster`: the topology of docker/compose.yaml on this machine, without Docker.

    2 API processes on ONE port   swarmdirector serve --reuse-port, SWARM_EXECUTE_RUNS=false
    1 worker                      swarmdirector worker (health and metrics on its own port)
    the local PostgreSQL          127.0.0.1:5432, trust auth, role postgres (or root)
    the local Redis               127.0.0.1:6379

The kernel spreads the API's connections over the processes that share the port (SO_REUSEPORT):
the load balancer of the compose file, without one. The database is created if it is missing and
migrated once, before anything starts (the compose file's `migrate` step); every process then
runs with SWARM_AUTO_MIGRATE=false. It stays in the foreground with every process's log, each
line prefixed with its name. Ctrl-C or SIGTERM stops them all gracefully: each gets SIGTERM,
streams end with `stream.closing`, live runs get SWARM_SHUTDOWN_GRACE_S to finish.

Environment (all optional):
    CLUSTER_HOST          127.0.0.1   where the API and the workers listen (beyond loopback: keys required)
    CLUSTER_PORT          8000        the API's one port
    CLUSTER_WORKER_PORT   8001        the first worker's /healthz, /readyz and /metrics; the next count up
    CLUSTER_API           2           API processes
    CLUSTER_WORKERS       1           workers
    CLUSTER_READY_S       90          how long to wait for everything to be ready
    SWARM_DATABASE_URL    postgresql+asyncpg://postgres@127.0.0.1:5432/swarmdirector (role root if
                          there is no postgres)
    SWARM_REDIS_URL       redis://127.0.0.1:6379/0
    any other SWARM_* setting reaches every process (SWARM_REDIS_PREFIX, SWARM_DEFAULT_MODEL, ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import asyncpg
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT, PG_USERS = "127.0.0.1", 5432, ("postgres", "root")
DEFAULT_DATABASE = "swarmdirector"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CLEAN_EXIT = {0, -signal.SIGTERM, -signal.SIGINT}  # uvicorn re-raises the signal once it has stopped


class ClusterError(Exception):
    """Something the person starting the cluster must fix; said in one line."""


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ClusterError(f"{name}={raw!r} is not a number") from None


# -- PostgreSQL and Redis ----------------------------------------------------------------------------


async def _connect(user: str | None, database: str, url: str | None = None) -> asyncpg.Connection:
    if url is not None:
        return await asyncpg.connect(url, database=database, timeout=5)
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=database, timeout=5)


async def _default_database_url() -> str:
    failures = []
    for user in PG_USERS:
        for maintenance in ("postgres", "template1"):
            try:
                connection = await _connect(user, maintenance)
            except Exception as exc:
                failures.append(f"{user}: {type(exc).__name__}: {exc}")
                continue
            await connection.close()
            return f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{DEFAULT_DATABASE}"
    raise ClusterError(
        f"no PostgreSQL at {PG_HOST}:{PG_PORT} for role {' or '.join(PG_USERS)} ({'; '.join(failures[-2:])}); "
        "start it, or set SWARM_DATABASE_URL"
    )


async def _ensure_database(url: str) -> None:
    """Create the URL's database when it does not exist (its role must be allowed to)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise ClusterError(f"make cluster needs PostgreSQL: processes share it (SWARM_DATABASE_URL={url})")
    name = parsed.database or DEFAULT_DATABASE
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await _connect(None, name, plain)
    except asyncpg.InvalidCatalogNameError:
        pass
    except Exception as exc:
        raise ClusterError(f"cannot reach PostgreSQL at {parsed.host}:{parsed.port or 5432}: {exc}") from exc
    else:
        await connection.close()
        return
    for maintenance in ("postgres", "template1"):
        try:
            connection = await _connect(None, maintenance, plain)
        except Exception:
            continue
        try:
            quoted = name.replace('"', '""')
            await connection.execute(f'CREATE DATABASE "{quoted}"')
            print(f"{'cluster':<9}| created database {name}", flush=True)
        except asyncpg.DuplicateDatabaseError:
            pass  # created by someone else meanwhile
        except Exception as exc:
            raise ClusterError(f"cannot create database {name}: {exc}") from exc
        finally:
            await connection.close()
        return
    raise ClusterError(f"database {name} does not exist and no maintenance database answers to create it")


def database_url() -> str:
    url = os.environ.get("SWARM_DATABASE_URL") or asyncio.run(_default_database_url())
    asyncio.run(_ensure_database(url))
    return url


def check_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ClusterError(f"no Redis at {url} ({exc}); start it, or set SWARM_REDIS_URL") from exc
    finally:
        client.close()


# -- processes ---------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this script dies, even by SIGKILL (Linux; else nothing)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` has a socket listening on TCP ``port``; None where /proc cannot tell.

    Several API processes answer on one port, so its /readyz says that one of them is ready, not
    which. uvicorn calls listen() once the app has started, so a socket of its own in LISTEN is
    that process's own readiness.
    """
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        rows = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as lines:
                rows += [line.split() for line in list(lines)[1:]]
    except OSError:
        return None
    # columns: sl, local address (hex ip:port), remote, state (0A = LISTEN), ..., inode (10th)
    return any(
        len(row) > 9 and row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port and row[9] in inodes
        for row in rows
    )


@dataclass
class Member:
    name: str
    command: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # a port it shares with others: ready once it listens there itself
    popen: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        if self.port is not None and self.popen is not None and listens(self.popen.pid, self.port) is False:
            return False
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class Cluster:
    def __init__(self, env: dict[str, str], members: list[Member]) -> None:
        self.env = env
        self.members = members
        self.stopping = threading.Event()
        self._print_lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self._print_lock:
            sys.stdout.write(f"{name:<9}| {line}\n")
            sys.stdout.flush()

    def _relay(self, member: Member, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(member.name, raw.decode(errors="replace").rstrip())
        stream.close()

    def migrate(self) -> None:
        self.say("cluster", "migrating the database (once, before anything starts)")
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "db", "upgrade"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ClusterError(f"migration failed:\n{done.stderr.strip()}")

    def start(self) -> None:
        # every process first, the threads that relay their logs after: forking with threads running
        # (preexec_fn) is not safe
        for member in self.members:
            member.popen = subprocess.Popen(
                member.command,
                cwd=ROOT,
                env={**self.env, **member.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this script only, which stops them itself
                preexec_fn=_die_with_parent,
            )
        for member in self.members:
            assert member.popen is not None and member.popen.stdout is not None
            member.reader = threading.Thread(
                target=self._relay, args=(member, member.popen.stdout), name=f"relay-{member.name}", daemon=True
            )
            member.reader.start()

    def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        pending = list(self.members)
        while pending:
            if self.stopping.is_set():
                return
            for member in list(pending):
                if not member.alive():
                    raise ClusterError(f"{member.name} exited with {member.popen and member.popen.returncode}")
                if member.ready():
                    pending.remove(member)
            if time.monotonic() > deadline:
                raise ClusterError(f"not ready within {within:.0f} s: {', '.join(m.name for m in pending)}")
            self.stopping.wait(0.2)

    def watch(self) -> str | None:
        """Until a signal (None) or until a process exits by itself (its name)."""
        while not self.stopping.wait(0.5):
            for member in self.members:
                if not member.alive():
                    return member.name
        return None

    def stop(self, grace: float) -> bool:
        """SIGTERM to every process, SIGKILL to those still there after ``grace``; all exited cleanly?"""
        for member in self.members:
            if member.alive():
                assert member.popen is not None
                member.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        clean = True
        for member in self.members:
            if member.popen is None:
                continue
            try:
                code = member.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("cluster", f"{member.name} did not stop within {grace:.0f} s: killed")
                member.popen.kill()
                code = member.popen.wait()
            if code not in CLEAN_EXIT:
                clean = False
                self.say("cluster", f"{member.name} exited with {code}")
            if member.reader is not None:
                member.reader.join(5)
        return clean


def build(env: dict[str, str]) -> Cluster:
    host = os.environ.get("CLUSTER_HOST", "127.0.0.1")
    port = env_int("CLUSTER_PORT", 8000)
    worker_port = env_int("CLUSTER_WORKER_PORT", 8001)
    apis, workers = env_int("CLUSTER_API", 2), env_int("CLUSTER_WORKERS", 1)
    if apis < 1 or workers < 1:
        raise ClusterError("CLUSTER_API and CLUSTER_WORKERS must be at least 1")
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    cli = [sys.executable, "-m", "app.cli"]
    members = [
        Member(
            f"api-{i + 1}",
            [*cli, "serve", "--host", host, "--port", str(port), "--reuse-port"],
            f"http://{probe_host}:{port}/readyz",
            {"SWARM_EXECUTE_RUNS": "false"},  # they serve; the workers execute
            port,
        )
        for i in range(apis)
    ]
    members += [
        Member(
            f"worker-{i + 1}",
            [*cli, "worker", "--host", host, "--port", str(worker_port + i)],
            f"http://{probe_host}:{worker_port + i}/readyz",
        )
        for i in range(workers)
    ]
    return Cluster(env, members)


def main() -> int:
    cluster: Cluster | None = None
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()
        if cluster is not None:
            cluster.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        redis_url = os.environ.get("SWARM_REDIS_URL") or DEFAULT_REDIS_URL
        check_redis(redis_url)
        env = {
            **os.environ,
            "SWARM_DATABASE_URL": database_url(),
            "SWARM_REDIS_URL": redis_url,
            "SWARM_AUTO_MIGRATE": "false",
            "AUTOGEN_DISABLE_RUNTIME_TRACING": "true",
        }
        env.pop("SWARM_EXECUTE_RUNS", None)
        env.setdefault("SWARM_LOG_JSON", "false")  # read by a person, prefixed per process
        cluster = build(env)
        cluster.migrate()
        if stop_requested.is_set():
            return 0
        cluster.start()
        grace = float(env.get("SWARM_SHUTDOWN_GRACE_S") or 10) + 15
        try:
            cluster.wait_ready(float(env_int("CLUSTER_READY_S", 90)))
            if not cluster.stopping.is_set():
                apis = [m for m in cluster.members if m.port is not None]
                workers = [m.health_url.removesuffix("/readyz") for m in cluster.members if m.port is None]
                cluster.say(
                    "cluster",
                    f"ready: the API on {apis[0].health_url.removesuffix('/readyz')} ({len(apis)} processes "
                    f"sharing the port), {len(workers)} worker(s) ({', '.join(workers)}). Ctrl-C stops them all.",
                )
            died = cluster.watch()
        except ClusterError as exc:
            cluster.say("cluster", str(exc))
            cluster.stop(grace)
            return 1
        if died is not None:
            cluster.say("cluster", f"{died} exited: stopping the others")
            cluster.stop(grace)
            return 1
        cluster.say("cluster", "stopping: SIGTERM to every process")
        clean = cluster.stop(grace)
        cluster.say("cluster", "stopped" if clean else "stopped, not cleanly")
        return 0 if clean else 1
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
