"""Workers lost mid-stream, with real processes and real signals.

- A worker killed while it streams: the sweeper copies the deltas that reached the run's Redis stream
  but never the database, so the stored log has no gap; the settling event says where it ends
  (``lost_after_seq``) and every delta a watcher saw is stored, as it was seen.
- A worker frozen (``SIGSTOP``) past its lease, then continued: the sweeper settles its run, and the
  woken worker writes nothing more (the recorder's fence: its rows are left out, ``write_fenced``).
  The stored log ends with the settling event.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.envelope import UNSTORED_MAX
from app.runs.models import RunEvent
from tests.e2e.test_streaming import TERMINAL, assert_well_formed
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect, read_events
from tests.scaleout.conftest import LEASE_S, Cluster, Proc

pytestmark = pytest.mark.e2e

STREAMING = team(model="fake/t4000-d2", max_messages=3)  # one long reply, a delta every 2 ms


def payload(event: dict[str, Any]) -> str:
    return json.dumps({"type": event["type"], "data": event["data"]}, sort_keys=True)


async def watch_until(http: httpx.AsyncClient, url: str, run_id: str, deltas: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with http.stream("GET", f"{url}/v1/runs/{run_id}/events") as response:
        async for event in read_events(response):
            if "seq" in event:
                seen.append(event)
            if sum(e["type"] == "message.delta" for e in seen) >= deltas:
                return seen
    raise AssertionError(f"the run ended first: {seen[-1]}")


async def stored_top(database_url: str, run_id: str) -> tuple[int, int]:
    """The last seq stored for the run, in any row, and how many rows hold it."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            top = await conn.scalar(
                select(func.max(func.coalesce(RunEvent.seq_end, RunEvent.seq))).where(RunEvent.run_id == run_id)
            )
            rows = await conn.scalar(select(func.count()).where(RunEvent.run_id == run_id))
    finally:
        await engine.dispose()
    return int(top or 0), int(rows or 0)


async def wait_for_log(proc: Proc, text: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while text not in proc.log.read_text():
            await asyncio.sleep(0.05)


async def test_a_killed_worker_s_stored_log_has_every_delta_a_watcher_saw(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = cluster.api("api-a")
    doomed = cluster.worker("doomed")
    await cluster.up(a, doomed)
    run = (await http.post(f"{a.url}/v1/runs", json=run_body(team=STREAMING))).json()
    seen = await watch_until(http, a.url, run["id"], deltas=200)
    cluster.kill(doomed)

    settled = await wait_for_status(http, run["id"], {"failed"}, timeout=LEASE_S + 10, url=a.url)
    assert settled["error"]["code"] == "worker_lost", settled
    stored = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    assert_well_formed(stored)  # dense up to `lost_after_seq`, then the settling event
    end = stored[-1]
    assert end["type"] == "run.failed" and end["seq"] == end["data"]["lost_after_seq"] + UNSTORED_MAX + 1
    by_seq = {e["seq"]: payload(e) for e in stored}
    # a replica's watcher reads the run's Redis stream: all it saw is there, and so copied before the end
    assert end["data"]["lost_after_seq"] >= seen[-1]["seq"]
    assert all(by_seq[e["seq"]] == payload(e) for e in seen), "stored as it was seen"
    assert "lost_run_log_copied" in a.log.read_text() or "lost_run_log_copied" in "".join(
        p.log.read_text() for p in cluster.procs
    )


async def test_a_frozen_worker_writes_nothing_after_its_run_was_settled(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = cluster.api("api-a")
    frozen = cluster.worker("frozen")
    await cluster.up(a, frozen)
    run = (await http.post(f"{a.url}/v1/runs", json=run_body(team=STREAMING))).json()
    await watch_until(http, a.url, run["id"], deltas=100)
    frozen.popen.send_signal(signal.SIGSTOP)
    try:
        settled = await wait_for_status(http, run["id"], {"failed"}, timeout=LEASE_S + 10, url=a.url)
    finally:
        frozen.popen.send_signal(signal.SIGCONT)
    assert settled["error"]["code"] == "worker_lost", settled
    end_seq = settled["last_seq"]

    # it wakes, streams on, learns at its next renewal that the run is gone, and tries to write its
    # deltas and its own end (`run_finished` is logged once it tried): the fence leaves them out
    await wait_for_log(frozen, "run_finished", timeout=LEASE_S * 4 + 10)
    assert frozen.alive()
    top, _rows = await stored_top(cluster.database_url, run["id"])
    assert top == end_seq, f"rows stored past the settling event (seq {end_seq}): up to {top}"
    assert "write_fenced" in frozen.log.read_text()
    stored = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    assert_well_formed(stored)
    assert [e["type"] for e in stored if e["type"] in TERMINAL] == ["run.failed"]
    assert stored[-1]["seq"] == end_seq
    after = (await http.get(f"{a.url}/v1/runs/{run['id']}")).json()
    assert after["status"] == "failed" and after["last_seq"] == end_seq, "the settled end stands"
