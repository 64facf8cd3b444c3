"""A process killed while it streams: no seq a watcher was sent ever names a second event, and every
watcher that resumes from the last seq it got ends with exactly one terminal event.

Deltas are published before they are stored; the server killed with ``SIGKILL`` leaves some of them
sent and never stored. The next start settles the run past every seq that could have been sent
(``lost_after_seq`` says where the stored log ends). Five kills in a row, each under live watchers,
each watcher resuming on the restarted server with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.envelope import UNSTORED_MAX
from tests.e2e.test_streaming import TERMINAL, assert_well_formed
from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect, read_events

pytestmark = pytest.mark.e2e

KILLS = 5
WATCHERS = 6
SEEN_BEFORE_KILL = 15  # events each watcher has before the kill (the stream is well into its deltas)


def payload(event: dict[str, Any]) -> str:
    return json.dumps({"type": event["type"], "data": event["data"]}, sort_keys=True)


class Watcher:
    """One SSE client of a run: every event it got, in order, over every connection it made."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[dict[str, Any]] = []
        self.seen = asyncio.Event()

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def watch(self, client: httpx.AsyncClient) -> None:
        """Read until the terminal event or until the connection breaks (the server is killed)."""
        headers = {"last-event-id": str(self.last_seq)} if self.events else {}
        try:
            async with client.stream("GET", f"/v1/runs/{self.run_id}/events", headers=headers) as response:
                async for event in read_events(response):
                    if "seq" not in event:
                        continue  # a stream notice, not an event
                    self.events.append(event)
                    if len(self.events) >= SEEN_BEFORE_KILL:
                        self.seen.set()
                    if event["type"] in TERMINAL:
                        return
        except (httpx.TransportError, httpx.RemoteProtocolError):
            return


async def test_five_kills_under_live_watchers_never_reuse_a_seq(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    procs: list[subprocess.Popen[bytes]] = []

    async def start() -> tuple[subprocess.Popen[bytes], httpx.AsyncClient]:
        port = free_port()
        proc = spawn_serve(port, database_url, SWARM_SHUTDOWN_GRACE_S="0.2")
        procs.append(proc)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30, read=20))
        await wait_until_up(client, proc)
        return proc, client

    try:
        proc, client = await start()
        for kill in range(KILLS):
            body = run_body(team=team(model="fake/t4000-d2", max_messages=3))
            run = (await client.post("/v1/runs", json=body)).json()
            watchers = [Watcher(run["id"]) for _ in range(WATCHERS)]
            tasks = [asyncio.create_task(w.watch(client)) for w in watchers]
            async with asyncio.timeout(30):
                await asyncio.gather(*(w.seen.wait() for w in watchers))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            await asyncio.gather(*tasks)
            await client.aclose()
            assert not any(e["type"] in TERMINAL for w in watchers for e in w.events), "killed before the end"

            proc, client = await start()
            # every watcher resumes from the last seq it got, on the restarted server
            async with asyncio.timeout(30):
                await asyncio.gather(*(w.watch(client) for w in watchers))
            stored = await collect(client, f"/v1/runs/{run['id']}/events")
            end = stored[-1]
            assert end["type"] == "run.failed" and end["data"]["error"]["code"] == "server_restarted", end

            by_seq = {e["seq"]: payload(e) for e in stored}
            for w in watchers:
                terminals = [e for e in w.events if e["type"] in TERMINAL]
                assert len(terminals) == 1 and w.events[-1] is terminals[0], f"kill {kill}: one terminal event"
                assert terminals[0]["seq"] == end["seq"]
                seqs = [e["seq"] for e in w.events]
                assert seqs == sorted(set(seqs)), "in order, none twice"
                for e in w.events:
                    # what was sent live and what is stored never disagree on a seq
                    assert by_seq.get(e["seq"], payload(e)) == payload(e), f"kill {kill}: seq {e['seq']} reused"

            assert_well_formed(stored)
            lost_after = end["data"]["lost_after_seq"]
            assert end["seq"] == lost_after + UNSTORED_MAX + 1, "the run's end is numbered past the bound"
            for e in (e for w in watchers for e in w.events[:-1] if e["seq"] > lost_after):
                assert e["type"] in ("message.delta", "reasoning.delta"), "only streamed events are lost"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
