"""`make cluster` (scripts/cluster.py): the compose topology as local processes, started and stopped.

It runs on a PostgreSQL database that does not exist yet (``swarm_test_<hex>``: the script creates
and migrates it; the test drops it) and a Redis prefix of the test's own. Without PostgreSQL or
Redis it skips, or fails under ``SWARM_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.test_reuse_port import cluster_script
from tests.fixtures.process import free_port
from tests.fixtures.services import drop_database, new_database_name, pg_url, run_isolated

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.py"


@pytest.fixture
def new_database(postgres_user: str) -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped after the test, whoever created it."""
    name = new_database_name()
    try:
        yield pg_url(postgres_user, name)
    finally:
        run_isolated(drop_database(postgres_user, name))


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def start(log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env={**os.environ, "SWARM_ENVIRONMENT": "test", **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str, within: float) -> None:
    deadline = time.monotonic() + within
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"cluster.py exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {within} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def test_cluster_serves_the_demo_team_on_one_port_and_stops_on_sigterm(
    new_database: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    port, worker_port = free_port(), free_port()
    log = tmp_path / "cluster.log"
    proc = start(
        log,
        CLUSTER_PORT=str(port),
        CLUSTER_WORKER_PORT=str(worker_port),
        SWARM_DATABASE_URL=new_database,
        SWARM_REDIS_URL=redis_url,
        SWARM_REDIS_PREFIX=redis_prefix,
        SWARM_SHUTDOWN_GRACE_S="1",
    )
    pids: list[int] = []
    try:
        wait_for_line(proc, log, "cluster  | ready:", within=180)
        text = log.read_text()
        assert "created database swarm_test_" in text

        # two API processes listen on the one port, each with a socket of its own; one worker on its port
        listens = cluster_script().listens
        pids = children(proc.pid)
        assert len(pids) == 3, pids
        assert sum(bool(listens(pid, port)) for pid in pids) == 2
        assert sum(bool(listens(pid, worker_port)) for pid in pids) == 1
        # the API processes serve only; the worker executes
        assert text.count("executes_runs=False") == 2 and text.count("executes_runs=True") == 1

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert client.get("/readyz").status_code == 200
            run = client.post("/v1/runs/wait", json={"team_id": "demo", "task": "Write a haiku about the sea."})
            assert run.status_code == 200, run.text
            assert run.json()["status"] == "succeeded", run.json()
            assert run.json()["message_count"] > 0
        with httpx.Client(timeout=5) as client:
            assert client.get(f"http://127.0.0.1:{worker_port}/readyz").status_code == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-4000:]
        assert "cluster  | stopped\n" in log.read_text()
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the cluster"
    finally:
        if proc.poll() is None:
            # its children first, while it is alive to vouch for their pids (it has not reaped them)
            for pid in children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(10)


def test_cluster_says_what_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "cluster.log"
    proc = start(log, SWARM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert proc.wait(60) == 1
    assert "cluster: no Redis at redis://127.0.0.1:" in log.read_text()
    assert "SWARM_REDIS_URL" in log.read_text()


def test_cluster_refuses_sqlite(tmp_path: Path, redis_url: str) -> None:
    log = tmp_path / "cluster.log"
    proc = start(log, SWARM_REDIS_URL=redis_url, SWARM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert proc.wait(60) == 1
    assert "make cluster needs PostgreSQL" in log.read_text()
