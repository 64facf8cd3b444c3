"""`swarmdirector serve --reuse-port`: several API processes listening on one port.

Each process here has a database of its own, so which one answered a request shows: a team
created through the port lives in one of them, and fresh connections find it about half of the
time. That is the kernel spreading connections, with no proxy in between.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.fixtures.process import free_port, stop_processes
from tests.fixtures.specs import team

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def cluster_script() -> ModuleType:
    """scripts/cluster.py as a module (not a package: it is run as a script)."""
    spec = importlib.util.spec_from_file_location("swarm_cluster_script", ROOT / "scripts" / "cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def serve(port: int, database: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *extra],
        env={
            **os.environ,
            "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "SWARM_ENVIRONMENT": "test",
            "SWARM_LOG_LEVEL": "WARNING",
            "SWARM_SHUTDOWN_GRACE_S": "0.5",
        },
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        stop_processes(started)


async def until_listening(procs: list[subprocess.Popen[bytes]], port: int, logs: list[Path]) -> None:
    listens = cluster_script().listens
    deadline = time.monotonic() + 60
    while not all(listens(p.pid, port) for p in procs):
        for proc, log in zip(procs, logs, strict=True):
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the processes did not all listen on the port"
        await asyncio.sleep(0.1)


async def fresh_get(url: str) -> int:
    """One request on a connection of its own: the kernel picks a listener per connection."""
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(url)).status_code


async def test_two_processes_share_one_port_and_the_kernel_spreads_connections(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = serve(port, tmp_path / "a.db", logs[0], "--reuse-port")
    b = serve(port, tmp_path / "b.db", logs[1], "--reuse-port")
    processes += [a, b]
    await until_listening([a, b], port, logs)
    base = f"http://127.0.0.1:{port}"

    # a plain `serve` (no SO_REUSEPORT) cannot join them: the port stays theirs
    plain_log = tmp_path / "plain.log"
    plain = serve(port, tmp_path / "plain.db", plain_log)
    processes.append(plain)
    assert plain.wait(60) != 0, "a server without --reuse-port bound a port in use"
    assert "address already in use" in plain_log.read_text().lower()

    name = f"marker_{secrets.token_hex(4)}"
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(f"{base}/v1/teams", json=team(name))
    assert created.status_code == 201, created.text

    codes = [await fresh_get(f"{base}/v1/teams/{name}") for _ in range(40)]
    assert set(codes) <= {200, 404}
    assert codes.count(200) > 0 and codes.count(404) > 0, f"one process answered every connection: {codes}"

    # one stops gracefully; the other goes on serving the port alone
    a.send_signal(signal.SIGTERM)
    assert a.wait(30) in (0, -signal.SIGTERM)
    codes = [await fresh_get(f"{base}/healthz") for _ in range(10)]
    assert codes == [200] * 10
    assert b.poll() is None


async def test_reuse_port_fails_clearly_when_the_port_is_taken(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    first = serve(port, tmp_path / "first.db", tmp_path / "first.log")  # plain: no SO_REUSEPORT
    processes.append(first)
    await until_listening([first], port, [tmp_path / "first.log"])
    log = tmp_path / "second.log"
    second = serve(port, tmp_path / "second.db", log, "--reuse-port")
    processes.append(second)
    assert second.wait(60) == 1
    assert f"cannot listen on 127.0.0.1:{port} with SO_REUSEPORT" in log.read_text()
    assert not (tmp_path / "second.db").exists(), "it failed before touching its database"
