"""Limits on input size and on how many runs a principal may start: clear problems, in settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from app.runs.limits import RunLimits, TooManyRequests
from app.runtime.recorder import EventRecorder, Rows
from tests.conftest import Backend, LiveServer, serve_app
from tests.e2e.ws import WsClient
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_start_rate_is_a_sliding_minute_with_an_honest_retry_after() -> None:
    clock = Clock()
    limits = RunLimits(clock)
    for _ in range(3):
        limits.check_rate("alice", 3)
        limits.record_start("alice")
        clock.now += 10
    with pytest.raises(TooManyRequests) as refused:
        limits.check_rate("alice", 3)
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after_s == 30  # the first start leaves the window at 1060; it is 1030 now
    assert refused.value.headers == {"Retry-After": "30"}
    limits.check_rate("bob", 3)  # per principal
    clock.now += 30
    limits.check_rate("alice", 3)  # the first start has left the window


async def test_429_with_retry_after_once_a_principal_starts_too_many_runs(backend: Backend, tmp_path: Path) -> None:
    async with serve_app(backend.settings(tmp_path, max_runs_per_minute=2)) as (app, client):
        for _ in range(2):
            assert (await client.post("/v1/runs", json=run_body(team=team(model="fake/t2")))).status_code == 202
        r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t2")))
        body = assert_problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "2 runs" in body["detail"]
        for path in ("/v1/runs/stream", "/v1/runs/wait"):
            assert_problem(await client.post(path, json=run_body()), 429, "rate_limited")
        # another principal has its own allowance; refused requests took none of it
        other = await api_key_headers(app, "bob")
        assert (await client.post("/v1/runs", json=run_body(), headers=other)).status_code == 202
        # a request refused for another reason does not count
        bad = await client.post("/v1/runs", json={"team_id": "nope", "task": "x"}, headers=other)
        assert bad.status_code == 404
        assert (await client.post("/v1/runs", json=run_body(), headers=other)).status_code == 202


async def test_429_once_a_principal_has_too_many_live_runs(backend: Backend, tmp_path: Path) -> None:
    async with serve_app(backend.settings(tmp_path, max_live_runs_per_principal=2)) as (app, client):
        client.headers.update(await api_key_headers(app, "local"))
        other = await api_key_headers(app, "bob")
        slow = run_body(team=team(model="fake/t5000-d20"))
        first = (await client.post("/v1/runs", json=slow)).json()
        # an enqueued run in the same conversation is live too
        queued = await client.post(
            "/v1/runs", json={**slow, "conversation_id": first["conversation_id"], "if_busy": "enqueue"}
        )
        assert queued.status_code == 202
        r = await client.post("/v1/runs", json=slow)
        body = assert_problem(r, 429, "too_many_live_runs")
        assert int(r.headers["retry-after"]) >= 1 and "2 runs" in body["detail"]
        assert (await client.post("/v1/runs", json=run_body(), headers=other)).status_code == 202
        await client.post(f"/v1/runs/{queued.json()['id']}/cancel")
        await wait_for_status(client, queued.json()["id"], {"cancelled"})
        assert (await client.post("/v1/runs", json=run_body(team=team(model="fake/t2")))).status_code == 202
        await client.post(f"/v1/runs/{first['id']}/cancel")


async def test_a_burst_of_new_runs_takes_exactly_the_live_slots_left(backend: Backend, tmp_path: Path) -> None:
    # embedded, a new conversation's rows are written after the admission lock: the starts still being
    # written must hold their slots, or every request of a burst would find the principal idle
    async with serve_app(backend.settings(tmp_path, max_live_runs_per_principal=3)) as (app, client):
        client.headers.update(await api_key_headers(app, "local"))
        slow = run_body(team=team(model="fake/t5000-d20"))
        answers = await asyncio.gather(*(client.post("/v1/runs", json=slow) for _ in range(7)))
        assert sorted(r.status_code for r in answers) == [202] * 3 + [429] * 4
        for refused in (r for r in answers if r.status_code == 429):
            assert_problem(refused, 429, "too_many_live_runs")
        started = [r.json()["id"] for r in answers if r.status_code == 202]
        listed = (await client.get("/v1/runs", params={"limit": 50})).json()["data"]
        assert sorted(run["id"] for run in listed) == sorted(started)  # refused starts wrote nothing
        for run_id in started:
            await client.post(f"/v1/runs/{run_id}/cancel")
        for run_id in started:
            await wait_for_status(client, run_id, {"cancelled"})


@dataclass
class FailingWrites:
    """The event recorder's transactions fail while ``on`` and they would write a run of ``task``."""

    task: str
    error: Exception
    on: bool = True
    failures: int = 0


def fail_writes(task: str, error: Exception, monkeypatch: pytest.MonkeyPatch) -> FailingWrites:
    failing = FailingWrites(task, error)
    real = EventRecorder._write_all

    async def write_all(self: EventRecorder, batch: list[Any]) -> None:
        for item in batch:
            rows = item.apply.executions if isinstance(item.apply, Rows) else ()
            if failing.on and any(params.get("task") == task for _, params in rows):
                failing.failures += 1
                raise failing.error
        await real(self, batch)

    monkeypatch.setattr(EventRecorder, "_write_all", write_all)
    return failing


@pytest.mark.embedded_only
async def test_a_start_whose_rows_cannot_be_written_is_a_503_and_gives_back_its_slot(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_writes("doomed", IntegrityError("INSERT", {}, Exception("constraint failed")), monkeypatch)
    settings = backend.settings(tmp_path, max_live_runs_per_principal=1, max_runs_per_minute=1)
    async with serve_app(settings) as (_, client):
        r = await client.post("/v1/runs", json=run_body(task="doomed", team=team(model="fake/t2")))
        body = assert_problem(r, 503, "storage_unavailable")
        assert "not started" in body["detail"] and r.headers["retry-after"] == "1"
        assert failing.failures and (await client.get("/v1/runs")).json()["data"] == []
        assert (await client.get("/v1/conversations")).json()["data"] == []
        # neither the live slot nor the one start a minute was used up by the failed request
        r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t2")))
        assert r.status_code == 202, r.text
        await wait_for_status(client, r.json()["id"], {"succeeded"})
        assert_problem(await client.post("/v1/runs", json=run_body()), 429, "rate_limited")


@pytest.mark.embedded_only
async def test_a_start_whose_write_fails_for_a_moment_is_retried(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = fail_writes("patient", OperationalError("COMMIT", {}, Exception("database is locked")), monkeypatch)
    async with serve_app(backend.settings(tmp_path)) as (_, client):
        body = run_body(task="patient", team=team(model="fake/t2"))
        pending = asyncio.create_task(client.post("/v1/runs", json=body))
        while not failing.failures:
            await asyncio.sleep(0.01)
        failing.on = False  # the database answers again, within the recorder's retry_for_s
        r = await pending
        assert r.status_code == 202, r.text
        await wait_for_status(client, r.json()["id"], {"succeeded"})


@pytest.mark.embedded_only
@pytest.mark.parametrize("in_conversation", [False, True], ids=["new_conversation", "existing_conversation"])
async def test_a_start_cancelled_while_its_rows_are_written_still_runs(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_conversation: bool
) -> None:
    # the client goes away while the run's rows wait for the recorder: once they are written, the run
    # must still get its task, or it would sit queued until the next restart
    real = EventRecorder._write_all
    held, release = asyncio.Event(), asyncio.Event()

    async def write_all(self: EventRecorder, batch: list[Any]) -> None:
        for item in batch:
            rows = item.apply.executions if isinstance(item.apply, Rows) else ()
            if any(params.get("task") == "held" for _, params in rows):
                held.set()
                await release.wait()
        await real(self, batch)

    monkeypatch.setattr(EventRecorder, "_write_all", write_all)
    async with serve_app(backend.settings(tmp_path)) as (_, client):
        body = run_body(task="held", team=team(model="fake/t2"))
        if in_conversation:
            first = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t2")))
            body["conversation_id"] = first.json()["conversation_id"]
        request = asyncio.create_task(client.post("/v1/runs", json=body))
        await held.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        release.set()
        for _ in range(500):
            runs = [r for r in (await client.get("/v1/runs")).json()["data"] if r["task"] == "held"]
            if runs and runs[0]["status"] == "succeeded":
                break
            await asyncio.sleep(0.01)
        assert [r["status"] for r in runs] == ["succeeded"]


async def test_task_and_body_size_limits_are_clear_problems(backend: Backend, tmp_path: Path) -> None:
    async with serve_app(backend.settings(tmp_path, max_task_chars=100, max_body_bytes=4096)) as (_, client):
        r = await client.post("/v1/runs", json=run_body(task="x" * 101))
        assert_field_error(r, ["body", "task"], "task_too_long")
        assert (await client.post("/v1/runs", json=run_body(task="x" * 100))).status_code == 202
        body = assert_problem(await client.post("/v1/runs", json=run_body(task="x" * 5000)), 413, "payload_too_large")
        assert "4096" in body["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for _ in range(10):
                yield b"x" * 1000

        r = await client.post("/v1/agents", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(r, 413, "payload_too_large")


@pytest.mark.e2e
async def test_websocket_frames_over_the_limit_and_runs_over_the_rate_are_refused_on_an_open_socket(
    backend: Backend,
    tmp_path: Path,
) -> None:
    with LiveServer(backend.settings(tmp_path, ws_max_frame_bytes=2048, max_runs_per_minute=1)) as server:
        async with WsClient(server.url) as ws:
            # run.start over the socket is held to the same limits as POST /v1/runs
            started = await ws.reply_to({"type": "run.start", "id": "1", "subscribe": False, **run_body()})
            assert started["type"] == "ack", started
            refused = await ws.reply_to({"type": "run.start", "id": "2", "subscribe": False, **run_body()})
            assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
            assert 1 <= refused["retry_after_s"] <= 60, "the same wait HTTP gives in Retry-After"
            await ws.send({"type": "ping", "id": "big", "pad": "x" * 4000})
            reply = (await ws.until(lambda f: f["type"] in ("error", "pong")))[-1]
            assert reply["type"] == "error" and reply["code"] == "frame_too_large"  # not parsed, so no id
            assert (await ws.reply_to({"type": "ping", "id": "small"}))["type"] == "pong"


async def test_a_run_whose_end_was_streamed_no_longer_counts_as_live(backend: Backend, tmp_path: Path) -> None:
    async with serve_app(backend.settings(tmp_path, max_live_runs_per_principal=1)) as (app, client):
        client.headers.update(await api_key_headers(app, "local"))
        for _ in range(3):
            # the moment a client has seen the terminal event, it may start its next run
            events = await collect(client, "/v1/runs/stream", method="POST", json=run_body(team=team(model="fake/t2")))
            assert events[-1]["type"] == "run.completed"
            r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t2")))
            assert r.status_code == 202, r.text
            await wait_for_status(client, r.json()["id"], {"succeeded"})
