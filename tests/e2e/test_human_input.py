"""Human in the loop on a real uvicorn: user proxies and swarm hand-offs to the user, over HTTP+SSE and WS."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.e2e.test_streaming import assert_well_formed
from tests.e2e.ws import WsClient, events_of
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import read_events

pytestmark = pytest.mark.e2e


def asking_team(**extra: Any) -> dict[str, Any]:
    """An assistant, then a person, then the assistant again."""
    return team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4, **extra)


async def test_input_over_sse_and_http(live_client: httpx.AsyncClient) -> None:
    events: list[dict[str, Any]] = []
    async with live_client.stream("POST", "/v1/runs/stream", json=run_body(team=asking_team())) as response:
        async for event in read_events(response):
            events.append(event)
            if event["type"] == "input.requested":
                run_id, request = event["run_id"], event["data"]
                assert request["agent"] == "human"
                assert (await live_client.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_input"
                wrong = await live_client.post(f"/v1/runs/{run_id}/input", json={"request_id": "nope", "content": "x"})
                assert wrong.status_code == 409 and wrong.json()["code"] == "unknown_input_request"
                ok = await live_client.post(
                    f"/v1/runs/{run_id}/input", json={"request_id": request["request_id"], "content": "Go ahead."}
                )
                assert ok.status_code == 202, ok.text
    assert_well_formed(events)
    types = [e["type"] for e in events]
    assert types.index("input.requested") < types.index("input.received")
    assert events[-1]["type"] == "run.completed"
    received = next(e for e in events if e["type"] == "input.received")["data"]
    assert received == {"request_id": request["request_id"], "agent": "human", "content": "Go ahead."}
    run = (await live_client.get(f"/v1/runs/{run_id}")).json()
    messages = (await live_client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"]
    assert messages[2]["text"] == "Go ahead."
    # the answer is in the context of the assistant's next call: task, reply, answer (+ system message)
    assert messages[3]["text"].startswith("Fake reply 2 after 4 messages")
    late = await live_client.post(
        f"/v1/runs/{run_id}/input", json={"request_id": request["request_id"], "content": "x"}
    )
    assert late.status_code == 409 and late.json()["code"] == "not_awaiting_input"


async def test_input_over_the_socket(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        run_id = (await ws.reply_to({"type": "run.start", "id": "1", **run_body(team=asking_team())}))["run"]["id"]
        request = (await ws.until(lambda f: f.get("type") == "input.requested"))[-1]["data"]
        error = await ws.reply_to({"type": "input", "id": "bad", "run_id": run_id, "request_id": "zzz", "content": "x"})
        assert error["type"] == "error" and error["code"] == "unknown_input_request"
        ack = await ws.reply_to(
            {"type": "input", "id": "in", "run_id": run_id, "request_id": request["request_id"], "content": "Yes."}
        )
        assert ack["type"] == "ack" and ack["request_id"] == request["request_id"]
        await ws.wait_for(lambda f: f.get("type") == "subscription.ended" and f.get("run_id") == run_id)
        events = events_of(ws.frames, run_id)
    assert_well_formed(events)
    assert events[-1]["type"] == "run.completed"
    assert any(e["type"] == "message.completed" and e["data"]["text"] == "Yes." for e in events)


async def test_an_unanswered_request_times_out_on_the_server(live_client: httpx.AsyncClient) -> None:
    r = await live_client.post("/v1/runs/wait", json=run_body(team=asking_team(), input_timeout_s=0.3))
    run = r.json()
    assert run["status"] == "timed_out"
    assert run["error"]["code"] == "input_timeout"
    assert "0.3" in run["error"]["message"]
    page = await live_client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
    events = page.json()["data"]
    assert_well_formed(events)
    assert events[-1]["type"] == "run.failed" and events[-1]["data"]["status"] == "timed_out"


async def test_cancel_while_waiting_for_input(live_client: httpx.AsyncClient) -> None:
    run = (await live_client.post("/v1/runs", json=run_body(team=asking_team()))).json()
    await wait_for_status(live_client, run["id"], {"awaiting_input"})
    started = time.monotonic()
    r = await live_client.post(f"/v1/runs/{run['id']}/cancel")
    assert r.json()["status"] == "cancelled"
    assert time.monotonic() - started < 1.0


async def test_a_swarm_hand_off_to_the_user_asks_and_continues_in_the_same_run(live_client: httpx.AsyncClient) -> None:
    script = [{"handoff": "user"}, {"text": "Thanks, noted."}]
    members = [agent("desk", "fake/t3", handoffs=["user"], model_options={"script": script})]
    events: list[dict[str, Any]] = []
    async with live_client.stream(
        "POST", "/v1/runs/stream", json=run_body(team=team(kind="swarm", members=members, max_messages=6))
    ) as response:
        async for event in read_events(response):
            events.append(event)
            if event["type"] == "input.requested":
                assert event["data"]["agent"] == "desk"
                r = await live_client.post(
                    f"/v1/runs/{event['run_id']}/input",
                    json={"request_id": event["data"]["request_id"], "content": "My order is 42."},
                )
                assert r.status_code == 202
    assert_well_formed(events)
    assert events[-1]["type"] == "run.completed"
    handoffs = [e["data"] for e in events if e["type"] == "handoff"]
    assert handoffs[0]["source"] == "desk" and handoffs[0]["target"] == "user"
    assert handoffs[1]["source"] == "user" and handoffs[1]["target"] == "desk"
    texts = [e["data"]["text"] for e in events if e["type"] == "message.completed"]
    # the answer goes back to the agent that asked, which speaks next in the same run
    assert texts[texts.index("My order is 42.") + 1] == "Thanks, noted."
