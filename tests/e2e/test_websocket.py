"""`WS /v1/ws` on a real uvicorn: many runs per socket, resume, bad frames, cancel, limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Backend, LiveServer
from tests.e2e.test_streaming import assert_well_formed
from tests.e2e.ws import WsClient, events_of
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect

pytestmark = pytest.mark.e2e


def start_frame(frame_id: str, **body: Any) -> dict[str, Any]:
    return {"type": "run.start", "id": frame_id, **run_body(**body)}


def ended(run_id: str) -> Any:
    return lambda f: f.get("type") == "subscription.ended" and f.get("run_id") == run_id


async def test_two_runs_on_one_socket_interleave_and_each_is_complete(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        a = (await ws.reply_to(start_frame("a", team=team(model="fake/t30-d3", max_messages=3))))["run"]["id"]
        b = (await ws.reply_to(start_frame("b", team=team(model="fake/t30-d3", max_messages=3))))["run"]["id"]
        done: set[str] = set()
        await ws.wait_for(
            lambda f: f.get("type") == "subscription.ended" and done.add(f["run_id"]) is None and len(done) == 2
        )
        for run_id in (a, b):
            assert_well_formed(events_of(ws.frames, run_id))
        order = [f["run_id"] for f in ws.frames if "seq" in f]
        first_b = order.index(b)
        assert a in order[first_b:], "the runs' events interleave on the socket"
        async with httpx.AsyncClient(base_url=live_server.url) as client:
            for run_id in (a, b):
                assert events_of(ws.frames, run_id) == await collect(client, f"/v1/runs/{run_id}/events")


async def test_a_dropped_socket_resumes_with_after_without_gap_or_duplicate(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        run_id = (await ws.reply_to(start_frame("1", team=team(model="fake/t40-d5", max_messages=3))))["run"]["id"]
        first = events_of(await ws.until(lambda f: f.get("seq") == 9), run_id)
    # the socket is gone; the run is not
    async with WsClient(live_server.url) as ws:
        ack = await ws.reply_to({"type": "subscribe", "id": "s", "run_id": run_id, "after": 9})
        assert ack["type"] == "ack" and ack["after"] == 9
        await ws.wait_for(ended(run_id))
        rest = events_of(ws.frames, run_id)
    assert rest[0]["seq"] == 10
    assert_well_formed(first + rest)
    assert rest[-1]["type"] == "run.completed"


async def test_bad_frames_get_error_frames_and_the_socket_stays_usable(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        running = (await ws.reply_to(start_frame("ok", team=team(model="fake/t30-d5", max_messages=3))))["run"]["id"]
        error = await ws.reply_to({"type": "run.start", "id": "e1", "team_id": "demo"})
        assert error["type"] == "error" and error["code"] == "invalid_request" and error["for"] == "run.start"
        assert any(e["loc"][-1] == "task" for e in error["errors"])
        error = await ws.reply_to({"type": "run.start", "id": "e2", "team_id": "no-such-team", "task": "x"})
        assert error["code"] == "team_not_found"
        error = await ws.reply_to(
            {
                "type": "run.start",
                "id": "e3",
                "task": "x",
                "team": {"name": "t", "kind": "selector", "members": [{"name": "a"}]},
            }
        )
        assert error["code"] == "invalid_team"
        error = await ws.reply_to({"type": "subscribe", "id": "e4", "run_id": "run_nope"})
        assert error["code"] == "not_found"
        error = await ws.reply_to({"type": "launch", "id": "e5"})
        assert error["code"] == "invalid_frame"
        await ws.send("{not json")
        assert (await ws.until(lambda f: f.get("type") == "error"))[-1]["code"] == "invalid_frame"
        await ws.send("[1, 2]")
        assert (await ws.until(lambda f: f.get("type") == "error"))[-1]["code"] == "invalid_frame"
        await ws.send({"type": "ping", "id": "big", "pad": "x" * 70_000})
        assert (await ws.until(lambda f: f.get("type") == "error"))[-1]["code"] == "frame_too_large"
        assert (await ws.reply_to({"type": "ping", "id": "p"}))["type"] == "pong"
        # the good run went on through all of it
        await ws.wait_for(ended(running))
        assert_well_formed(events_of(ws.frames, running))


async def test_cancel_over_the_socket_ends_the_run_within_a_second(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        run_id = (await ws.reply_to(start_frame("1", team=team(model="fake/t2000-d5", max_messages=3))))["run"]["id"]
        await ws.until(lambda f: f.get("type") == "message.delta")
        started = time.monotonic()
        ack = await ws.reply_to({"type": "cancel", "id": "c", "run_id": run_id})
        assert ack["type"] == "ack"
        cancelled = await ws.wait_for(lambda f: f.get("type") == "run.cancelled")
        assert time.monotonic() - started < 1.0
        assert cancelled["run_id"] == run_id
        await ws.wait_for(ended(run_id))
        assert_well_formed(events_of(ws.frames, run_id))
        again = await ws.reply_to({"type": "cancel", "id": "c2", "run_id": run_id})
        assert again["type"] == "ack" and again["run"]["status"] == "cancelled"


async def test_subscriptions_per_socket_are_bounded(backend: Backend, tmp_path: Path) -> None:
    with LiveServer(backend.settings(tmp_path, ws_max_subscriptions=2)) as server:
        async with WsClient(server.url) as ws:
            for i in range(2):
                ack = await ws.reply_to(start_frame(str(i), team=team(model="fake/t500-d5", max_messages=3)))
                assert ack["type"] == "ack"
            error = await ws.reply_to(start_frame("3", team=team(model="fake/t4", max_messages=3)))
            assert error["type"] == "error" and error["code"] == "too_many_subscriptions"
            # without a subscription, starting a run is still fine
            ack = await ws.reply_to(
                {**start_frame("4", team=team(model="fake/t4", max_messages=3)), "subscribe": False}
            )
            assert ack["type"] == "ack"
            unsub = await ws.reply_to({"type": "unsubscribe", "id": "u", "run_id": ack["run"]["id"]})
            assert unsub["code"] == "not_subscribed"


async def test_the_ack_comes_before_the_runs_first_event(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        await ws.send(start_frame("first", team=team(model="fake/t3", max_messages=2)))
        frames = await ws.until(lambda f: f.get("type") == "subscription.ended")
        assert frames[0]["type"] == "ack" and frames[0]["id"] == "first"
        run_id = frames[0]["run"]["id"]
        assert_well_formed(events_of(frames, run_id))
        await ws.send({"type": "subscribe", "id": "again", "run_id": run_id})
        frames = await ws.until(lambda f: f.get("type") == "subscription.ended")
        assert frames[0]["type"] == "ack" and frames[0]["id"] == "again"
