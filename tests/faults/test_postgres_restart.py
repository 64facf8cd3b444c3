"""PostgreSQL restarts (a fast shutdown, every session cut, then a start) under live streams.

An API replica's watchers of runs executed by a worker read the database between the run's Redis
stream entries; they ride the restart out (their reads are retried) and every stream completes,
dense and whole, with no unhandled exception in either process. A database that stays away longer
than ``retry_for_s`` ends a stream with ``StreamClosing`` (``storage_unavailable``) at its last seq,
never with an exception.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.core.db import create_engine
from app.runtime.bus import EventBus
from app.runtime.streams import StreamClosing, follow_batches
from tests.e2e.test_streaming import assert_well_formed
from tests.faults.conftest import OwnPostgres
from tests.fixtures.process import free_port
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import read_events
from tests.scaleout.conftest import Cluster

pytestmark = pytest.mark.e2e

RUNS = 3
QUIET_S = 1.5  # longer than a remote watcher's Redis read blocks (1 s): each then reads the database


async def test_live_streams_ride_out_a_postgres_restart(
    own_postgres: OwnPostgres, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    cluster = Cluster(own_postgres.url, redis_url, redis_prefix, tmp_path)
    # the outage must not outlast what the runs and streams ride out, nor the leases: a loaded
    # machine may take a while to start PostgreSQL again
    cluster.env.update(SWARM_STORAGE_RETRY_S="20", SWARM_LEASE_S="30")
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            api, worker = cluster.api("api"), cluster.worker("worker")
            await cluster.up(api, worker)
            # 12 replies of 30 tokens at 10 ms: long enough to restart the database in the middle
            body = run_body(team=team(model="fake/t30-d10", max_messages=12))
            runs = [(await http.post(f"{api.url}/v1/runs", json=body)).json() for _ in range(RUNS)]
            seen: list[list[dict[str, Any]]] = [[] for _ in runs]
            loop = asyncio.get_running_loop()
            last_event = [loop.time()]
            started = [asyncio.Event() for _ in runs]

            async def watch(i: int) -> None:
                async with http.stream("GET", f"{api.url}/v1/runs/{runs[i]['id']}/events") as response:
                    async for event in read_events(response):
                        seen[i].append(event)
                        last_event[0] = loop.time()
                        if event["type"] == "message.completed" and event["data"]["agent"] != "user":
                            started[i].set()

            watchers = [asyncio.create_task(watch(i)) for i in range(RUNS)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)

            await asyncio.to_thread(own_postgres.stop)
            # the runs stall on their next durable write; wait until no watcher has had an event for
            # longer than its Redis read blocks, so that every watcher has gone to the database
            async with asyncio.timeout(30):
                while loop.time() - last_event[0] < QUIET_S:
                    await asyncio.sleep(0.05)
            assert not any(w.done() for w in watchers), "no stream ended while the database was away"
            await asyncio.to_thread(own_postgres.start)

            await asyncio.wait_for(asyncio.gather(*watchers), 60)
            for run, events in zip(runs, seen, strict=True):
                kinds = [e["type"] for e in events]
                assert "stream.closing" not in kinds, kinds
                assert_well_formed(events)
                assert events[-1]["type"] == "run.completed", (run["id"], events[-1])
                assert (await http.get(f"{api.url}/v1/runs/{run['id']}")).json()["status"] == "succeeded"

        for proc in (api, worker):
            assert proc.alive()
            text = proc.log.read_text()
            assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-4000:]
    except BaseException:
        print(cluster.dump_logs())
        raise
    finally:
        cluster.stop_all()


async def test_a_stream_that_cannot_read_the_database_closes_at_its_last_seq() -> None:
    # nothing listens on the port: every read is refused, as while PostgreSQL is down
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/swarm")
    try:
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        loop = asyncio.get_running_loop()
        began = loop.time()
        items = [item async for item in follow_batches(sessionmaker, EventBus(16), "run_x", 7, retry_for_s=0.5)]
        elapsed = loop.time() - began
    finally:
        await engine.dispose()
    assert items == [StreamClosing(7, "storage_unavailable")]
    assert 0.3 <= elapsed < 5, f"retried for about retry_for_s, then closed ({elapsed:.2f} s)"
