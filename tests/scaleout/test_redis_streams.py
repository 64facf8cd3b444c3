"""The Redis side of the distributed mode, in one process: every event of a run in its stream (seq as
the stream id), a retention clock once the run has ended, and a replica that never ran the run
replaying it from Redis and the database alike."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from tests.conftest import make_settings, serve_app
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect


async def test_a_run_s_stream_holds_its_events_and_expires_after_the_run(
    fresh_postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    common = {"database_url": fresh_postgres_url, "redis_url": redis_url, "redis_prefix": redis_prefix}
    async with (
        serve_app(make_settings(tmp_path, stream_retention_s=120, **common)) as (_, a),
        # a replica that only serves: it never runs anything itself
        serve_app(make_settings(tmp_path, execute_runs=False, **common)) as (_, b),
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


async def test_a_watcher_moves_to_the_local_bus_once_its_run_is_claimed_here(
    fresh_postgres_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url=fresh_postgres_url, redis_url=redis_url, redis_prefix=redis_prefix)
    async with serve_app(settings) as (app, c):
        services = app.state.services
        first = (await c.post("/v1/runs", json=run_body(team=team(model="fake/t20-d10", max_messages=2)))).json()
        # queued behind the first: not claimed yet, so its watcher starts on the Redis stream
        second = (
            await c.post(
                "/v1/runs",
                json=run_body(
                    team=team(model="fake/t40-d10", max_messages=2),
                    conversation_id=first["conversation_id"],
                    if_busy="enqueue",
                ),
            )
        ).json()
        assert (await c.get(f"/v1/runs/{second['id']}")).json()["status"] == "queued"
        local_watchers: list[int] = []

        async def watch_the_bus() -> None:
            while True:
                if services.runs.is_live(second["id"]):
                    local_watchers.append(services.bus.live_watchers())
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(watch_the_bus())
        try:
            events = await collect(c, f"/v1/runs/{second['id']}/events")
        finally:
            sampler.cancel()
        assert events[-1]["type"] == "run.completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert local_watchers and max(local_watchers) >= 1, "the watcher re-attached to the local bus"
