"""`/agui/teams/{team}` on a real uvicorn: threads are conversations, runs are runs, the stream is a view.

A POST starts an ordinary run (visible on ``/v1/runs``), the thread it names is the caller's
conversation, a repeated ``runId`` is the same run, closing the stream leaves the run going and the
cancel route stops it. Bad input is refused before anything is started.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from ag_ui_validate.pytest_plugin import validate_agui

from tests.conftest import LiveServer, make_settings, serve_app
from tests.fixtures.principals import api_key_headers
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

ASKING = team("asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)
STUCK = team("stuck", kind="single", members=[agent("stuck", "fake/t3", model_options={"script": [{"hang": True}]})])


def run_input(thread: str, text: str = "Write a haiku about rivers.", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threadId": thread,
        "runId": f"run_{uuid.uuid4().hex[:8]}",
        "messages": [{"id": f"msg_{uuid.uuid4().hex[:8]}", "role": "user", "content": text}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }
    body.update(extra)
    return body


def parse(body: str) -> list[dict[str, Any]]:
    """The events of an AG-UI SSE body (comments skipped)."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        data = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


async def wait_status(client: httpx.AsyncClient, run_url: str, status: str, headers: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        run: dict[str, Any] = (await client.get(run_url, headers=headers)).json()
        if run["status"] == status or time.monotonic() > deadline:
            assert run["status"] == status, run
            return run
        await asyncio.sleep(0.02)


@asynccontextmanager
async def live(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    config = make_settings(tmp_path, **settings)
    async with serve_app(config) as (_, setup):
        for spec in (team("pair", max_messages=4), STUCK, ASKING):
            assert (await setup.post("/v1/teams", json=spec)).status_code == 201
    with LiveServer(config) as server:
        async with server.client() as client:
            yield server, client


async def test_a_thread_is_a_conversation_continued_run_after_run(tmp_path: Path) -> None:
    async with live(tmp_path) as (_, client):
        first = run_input("thread-a")
        r = await client.post("/agui/teams/pair", json=first)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = parse(r.text)
        assert (events[0]["type"], events[-1]["type"]) == ("RUN_STARTED", "RUN_FINISHED")
        assert (events[0]["threadId"], events[0]["runId"]) == ("thread-a", first["runId"])
        run = (await client.get(r.headers["content-location"])).json()
        assert (run["conversation_id"], run["status"], run["team_name"]) == ("thread-a", "succeeded", "pair")
        assert events[-1]["usage"][0]["totalTokens"] == run["usage"]["total_tokens"] > 0
        after_one = (await client.get("/v1/conversations/thread-a")).json()["message_count"]

        second = run_input("thread-a", "And one about the sea.")
        r = await client.post("/agui/teams/pair", json=second)
        assert parse(r.text)[-1]["type"] == "RUN_FINISHED"
        assert (await client.get(r.headers["content-location"])).json()["conversation_id"] == "thread-a"
        assert (await client.get("/v1/conversations/thread-a")).json()["message_count"] > after_one

        # the same runId again is a reconnect to the same run: no new run; what the thread said before it
        # as a MESSAGES_SNAPSHOT, then the run again from its start
        again = await client.post("/agui/teams/pair", json=second)
        assert again.headers["content-location"] == r.headers["content-location"]
        replayed = parse(again.text)
        assert replayed[1]["type"] == "MESSAGES_SNAPSHOT"
        assert validate_agui(replayed).diagnostics == []
        assert [replayed[0], *replayed[2:]] == parse(r.text)
        second_run = r.headers["content-location"].rsplit("/", 1)[1]
        stored = (await client.get("/v1/conversations/thread-a/messages")).json()["data"]
        before = [(m["id"], m["text"]) for m in stored if m["run_id"] != second_run]
        assert len(before) == after_one
        assert [(m["id"], m["content"]) for m in replayed[1]["messages"]] == before
        assert replayed[1]["messages"][0]["role"] == "user" and replayed[1]["messages"][1]["role"] == "assistant"
        assert len((await client.get("/v1/runs")).json()["data"]) == 2


async def test_another_principals_thread_is_a_404_and_nothing_is_started(tmp_path: Path) -> None:
    config = make_settings(tmp_path, auth_required=True)
    async with serve_app(config) as (app, setup):
        alice, bob = await api_key_headers(app, "alice"), await api_key_headers(app, "bob")
        for who in (alice, bob):
            assert (await setup.post("/v1/teams", json=team("pair", max_messages=4), headers=who)).status_code == 201
    with LiveServer(config) as server:
        async with server.client() as client:
            r = await client.post("/agui/teams/pair", json=run_input("alices"), headers=alice)
            assert parse(r.text)[-1]["type"] == "RUN_FINISHED"
            r = await client.post("/agui/teams/pair", json=run_input("alices"), headers=bob)
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
            assert (await client.get("/v1/runs", headers=bob)).json()["data"] == []
            assert len((await client.get("/v1/runs", headers=alice)).json()["data"]) == 1
            r = await client.post("/agui/teams/pair", json=run_input("no-key"))
            assert r.status_code == 401


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"messages": [{"id": "m1", "role": "assistant", "content": "hi"}]}, "messages", "no_user_turn"),
        ({"messages": []}, "messages", "no_user_turn"),
        (
            {"tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}]},
            "tools",
            "client_tools_unsupported",
        ),
        ({"threadId": "not a valid/thread"}, "threadId", "invalid_thread_id"),
        ({"threadId": "t" * 41}, "threadId", "invalid_thread_id"),
        # refused by AG-UI's own RunAgentInput
        ({"messages": [{"id": "m1", "role": "wizard", "content": "hi"}]}, "messages", "invalid_request"),
        ({"messages": [{"id": "m1", "role": "user"}]}, "messages", "invalid_request"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_starts_nothing(
    tmp_path: Path, change: dict[str, Any], field: str, code: str
) -> None:
    async with live(tmp_path) as (_, client):
        r = await client.post("/agui/teams/pair", json={**run_input("thread-b"), **change})
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["code"] == code
        assert problem["errors"][0]["loc"][:2] == ["body", field]
        assert (await client.get("/v1/runs")).json()["data"] == []
        r = await client.post("/agui/teams/nope", json=run_input("thread-b"))
        assert r.status_code == 404


async def test_closing_the_stream_leaves_the_run_going_and_the_cancel_route_stops_it(tmp_path: Path) -> None:
    async with live(tmp_path, sse_ping_s=0.2) as (_, client):
        body = run_input("thread-c")
        async with client.stream("POST", "/agui/teams/stuck", json=body) as r:
            run_url = r.headers["content-location"]
            seen = ""
            async for line in r.aiter_lines():
                seen += line + "\n"
                if line.startswith(": ping") and "RUN_STARTED" in seen:
                    break  # idle (the model hangs): kept open by comments
        await wait_status(client, run_url, "running")  # the stream is gone, the run is not
        r = await client.post(f"/agui/teams/stuck/runs/{body['runId']}/cancel")
        assert r.status_code == 200, r.text
        assert r.json() == {"threadId": "thread-c", "runId": body["runId"], "status": "cancelled"}
        # a re-POST of the run reattaches and replays it to its end, now RUN_FINISHED cancelled
        events = parse((await client.post("/agui/teams/stuck", json=body)).text)
        assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"] == {"type": "cancelled"}
        r = await client.post("/agui/teams/stuck/runs/run_unknown/cancel")
        assert r.status_code == 404


async def test_capabilities_and_health_describe_the_team(tmp_path: Path) -> None:
    async with live(tmp_path) as (_, client):
        r = await client.get("/agui/teams/pair/capabilities")
        assert r.status_code == 200
        described = r.json()
        assert described["identity"]["name"] == "pair"
        assert described["multiAgent"]["subagents"] == [{"name": "writer"}, {"name": "critic"}]
        assert described["transport"]["streaming"] is True
        assert described["humanInTheLoop"] == {"supported": True, "interrupts": True}
        assert described["reasoning"] == {"supported": True, "streaming": True, "encrypted": False}
        assert described["tools"]["clientProvided"] is False
        # resumable is AG-UI's resume by sequence numbers, which its frames do not carry; the reconnect
        # by runId is described where the spec leaves room (custom), and is the route that reconnects
        assert described["transport"]["resumable"] is False
        reconnect = described["custom"]["swarmdirector"]["reconnect"]
        assert (reconnect["method"], reconnect["path"]) == ("GET", "/agui/teams/pair/runs/{runId}")
        body = run_input("thread-cap")
        assert parse((await client.post("/agui/teams/pair", json=body)).text)[-1]["type"] == "RUN_FINISHED"
        again = parse((await client.get(reconnect["path"].format(runId=body["runId"]))).text)
        assert (again[0]["runId"], again[-1]["type"]) == (body["runId"], "RUN_FINISHED")
        cancel = described["custom"]["swarmdirector"]["cancel"]
        assert (cancel["method"], cancel["path"]) == ("POST", "/agui/teams/pair/runs/{runId}/cancel")
        r = await client.get("/agui/teams/pair/health")
        assert r.json() == {"status": "ok", "agent": "pair", "protocol": "ag-ui", "protocolVersion": "1.0"}
        assert (await client.get("/agui/teams/nope/health")).status_code == 404
        assert (await client.get("/agui/teams/nope/capabilities")).status_code == 404


def resume(thread: str, interrupt: str, payload: Any = "Go ahead.", status: str = "resolved") -> dict[str, Any]:
    return run_input(thread, messages=[], resume=[{"interruptId": interrupt, "status": status, "payload": payload}])


async def test_a_person_is_an_interrupt_answered_by_resume(tmp_path: Path) -> None:
    async with live(tmp_path) as (_, client):
        r = await client.post("/agui/teams/asking", json=run_input("thread-h"))
        paused = parse(r.text)
        assert paused[-1]["type"] == "RUN_FINISHED" and paused[-1]["outcome"]["type"] == "interrupt"
        (interrupt,) = paused[-1]["outcome"]["interrupts"]
        assert interrupt["reason"] == "input_required" and interrupt["metadata"] == {"agent": "human"}
        run_url = r.headers["content-location"]
        await wait_status(client, run_url, "awaiting_input")

        # other input while the interrupt is open: RUN_ERROR, and nothing is started or answered
        refused = parse((await client.post("/agui/teams/asking", json=run_input("thread-h"))).text)
        assert [e["type"] for e in refused] == ["RUN_STARTED", "RUN_ERROR"]
        assert refused[-1]["code"] == "interrupt_pending"
        # a resume that names no interrupt of the thread, or that leaves the open one unanswered
        wrong = parse((await client.post("/agui/teams/asking", json=resume("thread-h", "run_x/req_y"))).text)
        assert wrong[-1]["code"] == "unknown_interrupt"
        assert len((await client.get("/v1/runs")).json()["data"]) == 1
        assert (await client.get(run_url)).json()["status"] == "awaiting_input"

        answer = resume("thread-h", interrupt["id"])
        resumed = parse((await client.post("/agui/teams/asking", json=answer)).text)
        types = [e["type"] for e in resumed]
        assert types[:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"] and resumed[0]["runId"] == answer["runId"]
        assert [m.get("name", "user") for m in resumed[1]["messages"]] == ["user", "helper"]  # before the request
        assert validate_agui(resumed).diagnostics == []
        assert resumed[-1]["type"] == "RUN_FINISHED" and resumed[-1]["outcome"] == {"type": "success"}
        received = next(e for e in resumed if e["type"] == "CUSTOM")
        assert received["name"] == "swarmdirector.input_received" and received["value"]["content"] == "Go ahead."
        assert "helper" in [e["name"] for e in resumed if e["type"] == "SUBAGENT_STARTED"]
        # each AG-UI run has its own usage (one model, so one entry each), and the two add up to the run's
        run = (await client.get(run_url)).json()
        (before,) = paused[-1]["usage"]
        (after,) = resumed[-1]["usage"]
        assert before["totalTokens"] > 0 and after["totalTokens"] > 0
        assert before["inputTokens"] + after["inputTokens"] == run["usage"]["prompt_tokens"]
        assert before["outputTokens"] + after["outputTokens"] == run["usage"]["completion_tokens"]
        run = await wait_status(client, run_url, "succeeded")
        messages = (await client.get("/v1/conversations/thread-h/messages")).json()["data"]
        assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"]

        # the same resume again answers nothing twice: the same events, the same messages, the same run
        again = parse((await client.post("/agui/teams/asking", json=answer)).text)
        assert again == resumed
        assert len((await client.get("/v1/conversations/thread-h/messages")).json()["data"]) == 4
        assert (await client.get(run_url)).json()["last_seq"] == run["last_seq"]


async def test_a_resume_of_a_cancelled_interrupt_cancels_the_run(tmp_path: Path) -> None:
    async with live(tmp_path) as (_, client):
        r = await client.post("/agui/teams/asking", json=run_input("thread-i"))
        (interrupt,) = parse(r.text)[-1]["outcome"]["interrupts"]
        body = resume("thread-i", interrupt["id"], payload=None, status="cancelled")
        events = parse((await client.post("/agui/teams/asking", json=body)).text)
        assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"] == {"type": "cancelled"}
        assert (await client.get(r.headers["content-location"])).json()["status"] == "cancelled"


async def test_get_reconnects_with_a_snapshot_and_the_run_on_from_its_last_message(tmp_path: Path) -> None:
    config = make_settings(tmp_path, auth_required=True)
    async with serve_app(config) as (app, setup):
        alice, bob = await api_key_headers(app, "alice"), await api_key_headers(app, "bob")
        for who in (alice, bob):
            assert (await setup.post("/v1/teams", json=ASKING, headers=who)).status_code == 201
    with LiveServer(config) as server:
        async with server.client() as client:
            body = run_input("thread-g")
            r = await client.post("/agui/teams/asking", json=body, headers=alice)
            assert parse(r.text)[-1]["outcome"]["type"] == "interrupt"
            await wait_status(client, r.headers["content-location"], "awaiting_input", headers=alice)

            got = await client.get(f"/agui/teams/asking/runs/{body['runId']}", headers=alice)
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/event-stream")
            assert got.headers["content-location"] == r.headers["content-location"]
            events = parse(got.text)
            assert validate_agui(events).diagnostics == []
            # every completed message once, in the snapshot; the stream goes on after them: only the interrupt
            assert [e["type"] for e in events] == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "RUN_FINISHED"]
            assert (events[0]["threadId"], events[0]["runId"]) == ("thread-g", body["runId"])
            stored = (await client.get("/v1/conversations/thread-g/messages", headers=alice)).json()["data"]
            assert [(m["id"], m["content"]) for m in events[1]["messages"]] == [(m["id"], m["text"]) for m in stored]
            assert [m["agent"] for m in stored] == ["user", "helper"]
            assert events[-1]["outcome"] == parse(r.text)[-1]["outcome"]

            # another principal's run, an unknown run, an unknown team: 404, and nothing is started
            for url, who in [
                (f"/agui/teams/asking/runs/{body['runId']}", bob),
                ("/agui/teams/asking/runs/run_unknown", alice),
                (f"/agui/teams/nope/runs/{body['runId']}", alice),
            ]:
                r = await client.get(url, headers=who)
                assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", url
            assert (await client.get("/v1/runs", headers=bob)).json()["data"] == []
            assert len((await client.get("/v1/runs", headers=alice)).json()["data"]) == 1


async def test_a_reconnect_amid_overlapping_branches_has_each_message_once_and_whole(tmp_path: Path) -> None:
    # two branches stream at once; the short one ends while the long one is mid-message
    members = [agent("quick", "fake/t4-d20"), agent("slow", "fake/t30-d50")]
    overlapping = {"name": "both", "kind": "chain", "members": members}
    overlapping["steps"] = [{"parallel": [{"agent": "quick"}, {"agent": "slow"}]}]
    config = make_settings(tmp_path)
    async with serve_app(config) as (_, setup):
        assert (await setup.post("/v1/teams", json=overlapping)).status_code == 201, overlapping
    with LiveServer(config) as server:
        async with server.client() as client:
            body = run_input("thread-o")
            async with client.stream("POST", "/agui/teams/both", json=body) as r:
                run_url = r.headers["content-location"]
                async for line in r.aiter_lines():
                    if '"TEXT_MESSAGE_END"' in line:
                        break  # the client is cut after a first message ends
            events = parse((await client.get(f"/agui/teams/both/runs/{body['runId']}")).text)
            await wait_status(client, run_url, "succeeded")
            stored = (await client.get("/v1/conversations/thread-o/messages")).json()["data"]
    assert validate_agui(events).diagnostics == []
    assert events[1]["type"] == "MESSAGES_SNAPSHOT" and events[-1]["type"] == "RUN_FINISHED"
    streamed: dict[str, str] = {}
    for e in events:
        if e["type"] == "TEXT_MESSAGE_START":
            assert e["messageId"] not in streamed  # started once
            streamed[e["messageId"]] = ""
        elif e["type"] == "TEXT_MESSAGE_CONTENT":
            streamed[e["messageId"]] += e["delta"]
    snapshot = [(m["id"], m["content"]) for m in events[1]["messages"]]
    # each stored message once: in the snapshot or streamed whole after it
    assert not {mid for mid, _ in snapshot} & set(streamed)
    assert sorted(snapshot + list(streamed.items())) == sorted((m["id"], m["text"]) for m in stored)
    assert sorted(m["agent"] for m in stored) == ["quick", "slow", "user"]


async def test_every_limit_is_refused_before_a_stream_with_its_status_and_makes_nothing(tmp_path: Path) -> None:
    # AG-UI's RUN_ERROR is for input a started run cannot take (the interrupt rules); a request a limit
    # refuses starts no run, so it is the HTTP status and problem every other refusal here is, which
    # HttpAgent surfaces as such (test_node_client.py)
    limits = {"max_body_bytes": 4096, "max_task_chars": 200, "max_live_runs_per_principal": 1}
    async with live(tmp_path, max_runs_per_minute=3, **limits) as (_, client):

        async def refused(body: Any, status: int, code: str) -> httpx.Response:
            r = await client.post("/agui/teams/pair", json=body)
            assert r.status_code == status, r.text
            assert r.headers["content-type"] == "application/problem+json" and r.json()["code"] == code
            return r

        await refused(run_input("thread-l1", "x" * 5000), 413, "payload_too_large")  # the body
        r = await refused(run_input("thread-l2", "x" * 201), 422, "task_too_long")  # the new user turn
        assert r.json()["errors"][0]["loc"] == ["body", "messages"]
        assert (await client.get("/v1/conversations/thread-l2")).status_code == 404  # no thread made
        assert (await client.get("/v1/conversations")).json()["data"] == []

        # the live runs: one run of the stuck team holds the only slot
        body = run_input("thread-l3")
        async with client.stream("POST", "/agui/teams/stuck", json=body) as r:
            assert r.status_code == 200
            run_url = r.headers["content-location"]
        await wait_status(client, run_url, "running")
        r = await refused(run_input("thread-l4"), 429, "too_many_live_runs")
        assert int(r.headers["retry-after"]) > 0
        assert (await client.get("/v1/conversations/thread-l4")).status_code == 404  # no empty thread left
        assert (await client.post(f"/agui/teams/stuck/runs/{body['runId']}/cancel")).json()["status"] == "cancelled"

        # the start rate: three a minute (the refused start did not count); `tools: []` asks for nothing
        without_tools = {k: v for k, v in run_input("thread-l5").items() if k != "tools"}
        for ok in (run_input("thread-l5"), without_tools):
            assert parse((await client.post("/agui/teams/pair", json=ok)).text)[-1]["type"] == "RUN_FINISHED"
        r = await refused(run_input("thread-l5"), 429, "rate_limited")
        assert int(r.headers["retry-after"]) > 0
        r = await refused(run_input("thread-l6"), 429, "rate_limited")
        assert (await client.get("/v1/conversations/thread-l6")).status_code == 404  # a new thread: gone
        assert (await client.get("/v1/conversations/thread-l5")).status_code == 200  # one with runs: kept
        assert len((await client.get("/v1/runs")).json()["data"]) == 3
