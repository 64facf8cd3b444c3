"""SSE streaming against a real uvicorn on a loopback port: order, resume, fan-out, cancel, restart."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from tests.conftest import Backend, LiveServer, make_settings
from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.runs import start_run, wait_for_status
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect, read_events

pytestmark = pytest.mark.e2e

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


REPLY = re.compile(r"^Fake reply (\d+) after (\d+) messages:")


def assert_well_formed(events: list[dict[str, Any]]) -> None:
    seqs = [e["seq"] for e in events]
    lost_after = events[-1]["data"].get("lost_after_seq") if events else None
    if lost_after is not None:
        # a run whose executor was lost: dense up to the stored log's end, then the event that settles it
        assert seqs[-2] == lost_after < seqs[-1], "the settling event names where the stored log ends"
        seqs = seqs[:-1]
    assert seqs == list(range(1, len(seqs) + 1)), "seq is dense from 1, in order, without duplicates"
    terminal = [e for e in events if e["type"] in TERMINAL]
    assert len(terminal) == 1 and events[-1] is terminal[0], "exactly one terminal event, and it is last"
    assert events[0]["type"] == "run.queued" and events[1]["type"] == "run.started"
    assert len({e["run_id"] for e in events}) == 1


def deltas_by_message(events: list[dict[str, Any]]) -> dict[str, str]:
    text: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["type"] == "message.delta":
            text[e["data"]["message_id"]].append(e["data"]["text"])
    return {k: "".join(v) for k, v in text.items()}


async def test_stream_is_dense_ordered_and_deltas_rebuild_each_message(
    live_client: httpx.AsyncClient,
) -> None:
    events = await collect(
        live_client, "/v1/runs/stream", method="POST", json=run_body(team=team(model="fake/t12", max_messages=4))
    )
    assert_well_formed(events)
    assert events[-1]["type"] == "run.completed"
    completed = {e["data"]["message_id"]: e["data"] for e in events if e["type"] == "message.completed"}
    streamed = deltas_by_message(events)
    assert len(completed) == 4  # the task and three replies
    assert len(streamed) == 3
    for message_id, text in streamed.items():
        assert completed[message_id]["text"] == text
        assert completed[message_id]["agent"] in {"writer", "critic"}
    # every delta comes before the message it builds
    first_completed = {e["data"]["message_id"]: e["seq"] for e in events if e["type"] == "message.completed"}
    for e in events:
        if e["type"] == "message.delta":
            assert e["seq"] < first_completed[e["data"]["message_id"]]


async def test_resume_with_last_event_id_misses_nothing_and_repeats_nothing(
    live_client: httpx.AsyncClient,
) -> None:
    run = await start_run(live_client, team=team(model="fake/t40-d5", max_messages=3))
    first: list[dict[str, Any]] = []
    async with live_client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
        async for event in read_events(response):
            first.append(event)
            if len(first) == 7:
                break  # the client goes away mid-run
    assert [e["seq"] for e in first] == list(range(1, 8))
    rest = await collect(live_client, f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "7"})
    assert rest[0]["seq"] == 8
    assert_well_formed(first + rest)
    # the stored log says the same thing as the two live halves
    full = await collect(live_client, f"/v1/runs/{run['id']}/events")
    assert full == first + rest
    # ?after= is the same as Last-Event-ID, and the header wins over the query
    tail = await collect(live_client, f"/v1/runs/{run['id']}/events?after=3")
    assert tail == full[3:]
    tail = await collect(
        live_client,
        f"/v1/runs/{run['id']}/events?after=0",
        headers={"Last-Event-ID": str(len(full) - 1)},
    )
    assert tail == full[-1:]


async def test_two_watchers_see_identical_sequences(live_client: httpx.AsyncClient) -> None:
    run = await start_run(live_client, team=team(model="fake/t30-d3", max_messages=3))
    url = f"/v1/runs/{run['id']}/events"
    a, b = await asyncio.gather(collect(live_client, url), collect(live_client, url))
    assert_well_formed(a)
    assert a == b


async def test_a_dropped_client_does_not_cancel_its_run(live_client: httpx.AsyncClient) -> None:
    async with live_client.stream(
        "POST", "/v1/runs/stream", json=run_body(team=team(model="fake/t30-d3", max_messages=3))
    ) as response:
        seen = []
        async for event in read_events(response):
            seen.append(event)
            if len(seen) == 4:
                break
    run_id = seen[0]["run_id"]
    finished = await wait_for_status(live_client, run_id, {"succeeded", "failed", "cancelled"})
    assert finished["status"] == "succeeded"
    assert finished["message_count"] == 3


async def test_cancel_mid_stream_stops_the_model_within_a_second(
    live_client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    stats = live_server.services.models.fake_stats
    run = await start_run(live_client, team=team(model="fake/t2000-d5", max_messages=3))
    events: list[dict[str, Any]] = []
    async with live_client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
        async for event in read_events(response):
            events.append(event)
            if sum(e["type"] == "message.delta" for e in events) == 10:
                started = time.monotonic()
                r = await live_client.post(f"/v1/runs/{run['id']}/cancel")
                elapsed = time.monotonic() - started
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "cancelled"
                assert elapsed < 1.0
                chunks_at_cancel = stats.chunks
    assert_well_formed(events)
    assert events[-1]["type"] == "run.cancelled"
    assert events[-1]["data"]["reason"] == "cancelled"
    # the model is called no more: no chunk is produced after the run settled
    await asyncio.sleep(0.3)
    assert stats.chunks == chunks_at_cancel
    assert stats.open_streams == 0
    # a second cancel is a no-op
    again = await live_client.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    stored = (await live_client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})).json()
    assert stored["data"][-1]["seq"] == events[-1]["seq"]
    assert [e["type"] for e in stored["data"]].count("run.cancelled") == 1


async def test_restart_keeps_every_finished_run_message_and_event(backend: Backend, tmp_path: Any) -> None:
    settings = backend.settings(tmp_path)
    with LiveServer(settings) as first:
        async with first.client() as client:
            events = await collect(client, "/v1/runs/stream", method="POST", json=run_body(team=team(max_messages=3)))
            run_id = events[0]["run_id"]
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            conversation_id = run["conversation_id"]
            messages = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()
    with LiveServer(settings) as second:
        async with second.client() as client:
            assert (await client.get(f"/v1/runs/{run_id}")).json() == run
            assert (await client.get(f"/v1/conversations/{conversation_id}/messages")).json() == messages
            assert await collect(client, f"/v1/runs/{run_id}/events") == events
            assert len(messages["data"]) == 3


# embedded only: a single server settles the runs a dead process left at its next start; in the
# distributed mode a lost executor is found by its lapsed lease instead (tests/scaleout)
@pytest.mark.embedded_only
async def test_a_run_left_running_by_a_killed_process_fails_with_server_restarted(tmp_path: Any) -> None:
    settings = make_settings(tmp_path)
    port = free_port()
    proc = spawn_serve(port, settings.database_url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_until_up(client, proc)
            # a finished run first, so that the conversation has a saved team state
            first = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t2", max_messages=3)))
            assert first.json()["status"] == "succeeded", first.text
            conversation_id = first.json()["conversation_id"]
            run = await start_run(
                client, team=team(model="fake/t20-d10", max_messages=50), conversation_id=conversation_id
            )
            async with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
                async for event in read_events(response):
                    if event["type"] == "message.completed" and event["data"]["agent"] != "user":
                        break  # one agent message is committed; the run goes on
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with LiveServer(settings) as server:
        async with server.client() as client:
            settled = (await client.get(f"/v1/runs/{run['id']}")).json()
            assert settled["status"] == "failed"
            assert settled["error"]["code"] == "server_restarted"
            events = await collect(client, f"/v1/runs/{run['id']}/events")
            assert_well_formed(events)
            assert events[-1]["type"] == "run.failed"
            committed = [e["data"]["message_id"] for e in events if e["type"] == "message.completed"]
            messages = (await client.get(f"/v1/conversations/{settled['conversation_id']}/messages")).json()["data"]
            ours = [m for m in messages if m["run_id"] == run["id"]]
            assert len(committed) >= 2
            assert [m["id"] for m in ours] == committed
            # its end counts what it stored
            assert (
                events[-1]["data"]["usage"]["completion_tokens"]
                == sum(m["usage"]["completion_tokens"] for m in ours)
                > 0
            )
            assert settled["usage"]["completion_tokens"] == events[-1]["data"]["usage"]["completion_tokens"]
            # the next run continues from every stored message, the lost run's included (the team state
            # saved by the first run predates them): the system message, the history and its task
            after = await client.post(
                "/v1/runs/wait",
                json=run_body(team=team(model="fake/t2", max_messages=2), conversation_id=conversation_id),
            )
            assert after.json()["status"] == "succeeded", after.text
            seen = REPLY.match(after.json()["result"]["text"])
            assert seen is not None
            assert int(seen.group(2)) == 1 + len(messages) + 1


async def test_stopping_the_server_closes_streams_with_a_resume_point(backend: Backend, tmp_path: Any) -> None:
    settings = backend.settings(tmp_path, shutdown_grace_s=0.1)
    server = LiveServer(settings).start()
    frames: list[dict[str, Any]] = []
    async with server.client() as client:
        run = await start_run(client, team=team(model="fake/t5000-d5", max_messages=3))
        async with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
            async for event in read_events(response):
                frames.append(event)
                if len(frames) == 10:
                    stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        await stopping
    closing = frames[-1]
    assert closing["type"] == "stream.closing"
    assert closing["reason"] == "shutdown"
    assert closing["last_seq"] == frames[-2]["seq"]
    with LiveServer(settings) as again:
        async with again.client() as client:
            rest = await collect(
                client, f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(closing["last_seq"])}
            )
            assert_well_formed(frames[:-1] + rest)
            assert rest[-1]["type"] == "run.cancelled"
            assert rest[-1]["data"]["reason"] == "shutdown"
