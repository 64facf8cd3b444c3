"""Property: for any pattern of disconnects and resumes, a watcher gets events 1..n, each exactly once.

A watcher reads ``k`` events, goes away, and resumes after the last seq it got; a pattern is a
list of such ``k`` (with pauses, on live runs). The real ``follow()`` serves a stored, finished
run (1,000 patterns) and live runs (many watchers at once per run); the real SSE endpoint with
``Last-Event-ID`` serves live runs through a real uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.envelope import Envelope
from app.runtime.streams import follow
from tests.conftest import LiveServer, asgi_client
from tests.fixtures.runs import wait_run
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import read_events
from tests.fuzz.conftest import AppThread


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# how many events to take before each disconnect (0: connect and leave at once)
takes = st.lists(st.integers(min_value=0, max_value=30), max_size=6)
# on live runs, also how long to stay away (ms) before resuming
live_steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=25), st.integers(min_value=0, max_value=15)), max_size=8
)


async def watch(app: AppThread, run_id: str, pattern: list[tuple[int, int]]) -> list[int]:
    """Follow ``run_id`` with the given disconnects; the seqs received, in order."""
    services = app.services
    got: list[int] = []
    steps = [*pattern, (10**9, 0)]  # the last connection reads to the end
    for take, away_ms in steps:
        stream = cast(
            AsyncGenerator[Any, None],
            follow(services.read_sessionmaker, services.bus, run_id, got[-1] if got else 0, poll_s=0.01),
        )
        try:
            taken = 0
            while taken < take:
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    return got
                if isinstance(item, Envelope):
                    got.append(item.seq)
                    taken += 1
                    if item.terminal:
                        return got
        finally:
            await stream.aclose()  # the client goes away
        await asyncio.sleep(away_ms / 1000)
    return got


async def finished_run(app: AppThread, model: str) -> tuple[str, int]:
    async with asgi_client(app.app) as client:
        run = await wait_run(client, expect="succeeded", team=team(model=model, max_messages=4))
        return run["id"], run["last_seq"]


async def start_run(app: AppThread, model: str) -> str:
    async with asgi_client(app.app) as client:
        r = await client.post("/v1/runs", json=run_body(team=team(model=model, max_messages=4)))
        return str(r.json()["id"])


@pytest.fixture(scope="module")
def stored_run(app_thread: AppThread) -> tuple[str, int]:
    run_id, last = app_thread.run(finished_run(app_thread, "fake/t15"))
    assert last > 40
    return run_id, last


@fuzz(1000)
@given(pattern=takes)
def test_any_disconnect_pattern_on_a_stored_run_gets_every_event_once(
    app_thread: AppThread, stored_run: tuple[str, int], pattern: list[int]
) -> None:
    run_id, last = stored_run
    got = app_thread.run(watch(app_thread, run_id, [(k, 0) for k in pattern]))
    assert got == list(range(1, last + 1))


@fuzz(6)
@given(patterns=st.lists(live_steps, min_size=50, max_size=50))
def test_fifty_watchers_with_any_patterns_on_a_live_run_get_every_event_once(
    app_thread: AppThread, patterns: list[list[tuple[int, int]]]
) -> None:
    async def scenario() -> tuple[list[list[int]], int]:
        run_id = await start_run(app_thread, "fake/t40-d2")
        results = await asyncio.gather(*(watch(app_thread, run_id, p) for p in patterns))
        async with asgi_client(app_thread.app) as c:
            run = (await c.get(f"/v1/runs/{run_id}")).json()
        assert run["status"] == "succeeded", run
        return list(results), int(run["last_seq"])

    results, last = app_thread.run(scenario())
    for got in results:
        assert got == list(range(1, last + 1))


@pytest.fixture(scope="module")
def live_server_for_fuzz(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import make_settings

    with LiveServer(make_settings(tmp_path_factory.mktemp("sse"))) as server:
        yield server


async def watch_sse(client: httpx.AsyncClient, run_id: str, pattern: list[tuple[int, int]]) -> list[int]:
    got: list[int] = []
    for take, away_ms in [*pattern, (10**9, 0)]:
        headers = {"last-event-id": str(got[-1])} if got else {}
        async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
            taken = 0
            async for event in read_events(response):
                if "seq" not in event:
                    continue
                got.append(event["seq"])
                taken += 1
                if event["type"] in ("run.completed", "run.failed", "run.cancelled"):
                    return got
                if taken >= take:
                    break  # the client goes away mid-stream
        await asyncio.sleep(away_ms / 1000)
    return got


@fuzz(4)
@given(patterns=st.lists(live_steps, min_size=10, max_size=10))
def test_sse_watchers_with_any_patterns_on_a_live_run_get_every_event_once(
    live_server_for_fuzz: LiveServer, patterns: list[list[tuple[int, int]]]
) -> None:
    async def scenario() -> None:
        async with live_server_for_fuzz.client() as client:
            r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t40-d2", max_messages=4)))
            run_id = r.json()["id"]
            results = await asyncio.gather(*(watch_sse(client, run_id, p) for p in patterns))
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "succeeded"
            for got in results:
                assert got == list(range(1, run["last_seq"] + 1))

    asyncio.run(scenario())
