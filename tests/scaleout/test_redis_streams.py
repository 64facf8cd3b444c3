"""The Redis side of the distributed mode, in one process: every event of a run in its stream (seq as
the stream id), a retention clock once the run has ended, and a replica that never ran the run
replaying it from Redis and the database alike."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager

from app.main import create_app
from tests.conftest import make_settings
from tests.faults.stream import collect
from tests.fixtures.specs import run_body, team


async def test_a_run_s_stream_holds_its_events_and_expires_after_the_run(
    fresh_postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    common = {"database_url": fresh_postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix}
    executor = create_app(make_settings(tmp_path, stream_retention_s=120, **common))
    # a replica that only serves: it never runs anything itself
    replica = create_app(make_settings(tmp_path, execute_runs=False, **common))
    async with (
        LifespanManager(executor) as one,
        LifespanManager(replica) as two,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=one.app), base_url="http://one") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=two.app), base_url="http://two") as b,
    ):
        run = (await b.post("/v1/runs/wait", json=run_body(team=team(model="fake/t12", max_messages=3)))).json()
        assert run["status"] == "succeeded" and run["attempts"] == 1
        from_b = await collect(b, f"/v1/runs/{run['id']}/events")
        from_a = await collect(a, f"/v1/runs/{run['id']}/events")
        assert from_a == from_b and from_b[-1]["seq"] == run["last_seq"]

        client = aioredis.Redis.from_url(redis_url)
        try:
            key = f"{redis_prefix}:run:{run['id']}"
            entries = await client.xrange(key)
            # everything the executor published: all but `run.queued`, written by the replica that took the run
            assert [int(i.split(b"-")[0]) for i, _ in entries] == [e["seq"] for e in from_b[1:]]
            assert 0 < await client.ttl(key) <= 120
        finally:
            await client.aclose()
