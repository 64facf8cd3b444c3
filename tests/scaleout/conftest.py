"""A real cluster for the scale-out tests: API replicas and workers as processes, on PostgreSQL and Redis.

Every process is the installed CLI (`swarmdirector serve` with ``SWARM_EXECUTE_RUNS=false``, and
`swarmdirector worker`) on a database of the test's own and a Redis prefix of its own, with a short
lease so a lost worker is noticed within a second or two. Their logs go to files under the test's
``tmp_path`` (printed when a test fails). Without PostgreSQL or Redis the tests skip, or fail under
``SWARM_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.process import free_port, stop_processes

LEASE_S = 1.5
SWEEP_S = 0.25


@dataclass
class Proc:
    name: str
    kind: str  # serve | worker
    port: int
    popen: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # its own settings, for a spawn again
    chosen_port: bool = False  # the port was given (a restart on the same address), not picked free

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Cluster:
    database_url: str
    redis_url: str
    prefix: str
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def _spawn(self, kind: str, name: str, port: int | None = None, **env: str) -> Proc:
        chosen = port is not None
        port = port or free_port()
        log = self.logs / f"{name}.log"
        command = [sys.executable, "-m", "app.cli", kind, "--port", str(port)]
        popen = subprocess.Popen(
            command,
            env={
                **os.environ,
                "SWARM_DATABASE_URL": self.database_url,
                "SWARM_REDIS_URL": self.redis_url,
                "SWARM_REDIS_PREFIX": self.prefix,
                "SWARM_LEASE_S": str(LEASE_S),
                "SWARM_SWEEP_INTERVAL_S": str(SWEEP_S),
                "SWARM_SHUTDOWN_GRACE_S": "0.5",
                "SWARM_AUTO_MIGRATE": "false",  # the database is migrated; replicas must not race to do it
                "SWARM_LOG_LEVEL": "INFO",
                "SWARM_LOG_JSON": "true",
                "SWARM_ENVIRONMENT": "test",
                **self.env,
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        proc = Proc(name, kind, port, popen, log, dict(env), chosen)
        self.procs.append(proc)
        return proc

    def _again(self, proc: Proc) -> None:
        """Spawn ``proc`` again on another free port: the one picked was taken before it could bind (a
        free port is only free until someone else binds it, and clients take ephemeral ports too)."""
        fresh = self._spawn(proc.kind, proc.name, None, **proc.env)
        self.procs.remove(fresh)
        proc.port, proc.popen = fresh.port, fresh.popen

    def api(self, name: str, port: int | None = None) -> Proc:
        return self._spawn("serve", name, port, SWARM_EXECUTE_RUNS="false")

    def worker(self, name: str, **env: str) -> Proc:
        return self._spawn("worker", name, **env)

    async def up(self, *procs: Proc) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            for proc in procs:
                for _ in range(300):
                    if not proc.alive() and not proc.chosen_port and "address already in use" in proc.log.read_text():
                        self._again(proc)
                    if not proc.alive():
                        raise AssertionError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
                    try:
                        if (await client.get(f"{proc.url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"{proc.name} did not come up:\n{proc.log.read_text()[-3000:]}")

    def kill(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(10)

    def terminate(self, proc: Proc, within: float = 20) -> int:
        proc.popen.send_signal(signal.SIGTERM)
        return proc.popen.wait(within)

    def stop_all(self) -> None:
        stop_processes(p.popen for p in self.procs)

    def dump_logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log.read_text()[-4000:]}" for p in self.procs if p.log.exists())


@pytest.fixture
def cluster(
    fresh_postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    c = Cluster(fresh_postgres_url, redis_url, redis_prefix, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.dump_logs())


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
