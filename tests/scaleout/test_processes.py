"""`SWARM_PROCESSES=N`: one `swarmdirector serve` runs N API processes on one port (both cores), which
share the runs through Redis, and stop together."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_streaming import assert_well_formed
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.e2e


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


async def test_n_processes_share_one_port_and_stop_together(cluster: Cluster, http: httpx.AsyncClient) -> None:
    cluster.env["SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL"] = "100"
    api = cluster._spawn("serve", "api", SWARM_PROCESSES="2")
    await cluster.up(api)
    siblings = children(api.popen.pid)
    assert len(siblings) == 1, siblings
    for _ in range(300):  # the port answers once the first is up; wait for the other too
        if api.log.read_text().count("Application startup complete") == 2:
            break
        await asyncio.sleep(0.1)

    # runs started through the one port, streamed through it again (any process may answer)
    ids = [
        (await http.post(f"{api.url}/v1/runs", json=run_body(team=team(model="fake/t6-d2")))).json()["id"]
        for _ in range(12)
    ]
    for run_id in ids:
        events = await collect(http, f"{api.url}/v1/runs/{run_id}/events")
        assert_well_formed(events)
        assert events[-1]["type"] == "run.completed"
    log = api.log.read_text()  # both processes write to it
    assert log.count('"cluster_started"') == 2, "two API processes, each executing runs"
    assert log.count('"run_claimed"') == len(ids), "each run claimed once"

    # the first process stops its sibling, and waits for it, before it exits
    assert cluster.terminate(api) in (0, -signal.SIGTERM)
    for pid in siblings:
        assert not Path(f"/proc/{pid}").exists(), Path(f"/proc/{pid}/status").read_text()
    assert log.count('"cluster_started"') == 2
    assert api.log.read_text().count('"stopped"') == 2, "both shut down cleanly"
