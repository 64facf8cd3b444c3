"""A server raises its open-file limit: each watcher holds a socket, and a soft limit of 1,024 would
cap a process at about a thousand of them. Started with a low soft limit, the real `swarmdirector
serve` process runs with its soft limit at the hard one."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.fixtures.process import free_port, wait_until_up


def open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


async def test_the_server_raises_its_soft_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard open-file limit here ({hard}) leaves nothing to raise")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env={**os.environ, "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_until_up(client, proc)
        assert open_files(proc.pid) == (hard, hard)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
