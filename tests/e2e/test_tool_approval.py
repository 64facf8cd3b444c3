"""Tool approval on a real uvicorn (issue 24): a call of a tool that needs approval waits live for a
person's decision (approve, reject, edit), recorded in the event log and in the history; racing and
malformed answers are refused without answering anything."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runs.event_schemas import TypedRunEvent
from tests.conftest import LiveServer, make_settings, serve_app
from tests.docs.test_event_schemas import unlisted_fields
from tests.e2e.test_streaming import assert_well_formed
from tests.e2e.ws import WsClient, events_of
from tests.fixtures.runs import stored_events, wait_for_status
from tests.fixtures.specs import agent, run_body, team

pytestmark = pytest.mark.e2e

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


def approving_team(
    kind: str = "round_robin",
    tool: str = "calculator",
    arguments: dict[str, Any] | None = None,
    member: dict[str, Any] | None = None,
    then: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One assistant that calls ``tool`` (its call needs approval), then says it is done (or ``then``)."""
    script = [
        {"tool_calls": [{"name": tool, "arguments": arguments or {"expression": "2 + 3"}}]},
        then or {"text": "Done."},
    ]
    options = {"tools": [tool], "approve_tools": [tool], **(member or {})}
    solver = agent("solver", "fake/t3", model_options={"script": script}, reflect_on_tool_use=True, **options)
    if kind == "graph":
        extra["start"] = "solver"
    return team(kind=kind, members=[solver], max_messages=2, **extra)


async def asked(client: httpx.AsyncClient, **body: Any) -> tuple[str, dict[str, Any]]:
    """Start a run; once it waits for the person: its id and the request's data."""
    r = await client.post("/v1/runs", json=run_body(task="Add two and three.", **body))
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    await wait_for_status(client, run_id, {"awaiting_input"})
    requests = [e["data"] for e in await stored_events(client, run_id) if e["type"] == "input.requested"]
    return run_id, requests[-1]


async def answer(client: httpx.AsyncClient, run_id: str, request_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/v1/runs/{run_id}/input", json={"request_id": request_id, **body})


async def finished(client: httpx.AsyncClient, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ended run and its log, every event exactly as its documented schema says (the approval's too)."""
    run = await wait_for_status(client, run_id, TERMINAL)
    events = await stored_events(client, run_id)
    assert_well_formed(events)
    for raw in events:
        typed = TypedRunEvent.model_validate(raw).root
        assert typed.model_dump(mode="json") == raw
        assert unlisted_fields(typed.data) == [], raw
    return run, events


def one(events: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    (found,) = [e["data"] for e in events if e["type"] == type_]
    return found


async def history(client: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/conversations/{conversation_id}/messages")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_approve_runs_the_call_and_the_decision_is_in_the_log_and_the_history(
    live_client: httpx.AsyncClient,
) -> None:
    # a round robin parks for a user proxy; a tool's approval waits live (no park)
    run_id, request = await asked(live_client, team=approving_team())
    assert request["kind"] == "approval" and request["agent"] == "solver"
    assert request["tool"]["name"] == "calculator" and request["tool"]["arguments"] == {"expression": "2 + 3"}
    assert "calculator" in request["prompt"]
    r = await answer(live_client, run_id, request["request_id"], decision="approve")
    assert r.status_code == 202, r.text
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded", run
    types = [e["type"] for e in events]
    assert "run.requeued" not in types and "run.resumed" not in types  # it never let go of its process
    call = one(events, "tool.call")
    assert call["call_id"] == request["tool"]["call_id"]
    # in stream order: the call, the request, the answer, the result
    assert types.index("tool.call") < types.index("input.requested") < types.index("input.received")
    assert types.index("input.received") < types.index("tool.result")
    received = one(events, "input.received")
    assert received["decision"] == "approve" and "arguments" not in received
    assert one(events, "tool.result") == {**one(events, "tool.result"), "content": "5", "is_error": False}
    messages = await history(live_client, run["conversation_id"])
    decision = next(m for m in messages if m["type"] == "ToolApprovalMessage")
    assert decision["agent"] == "user"
    assert (
        decision["text"] == received["content"] == 'Approved the call of \'calculator\' with {"expression": "2 + 3"}.'
    )
    assert messages[-1]["text"] == "Done."


async def test_reject_gives_the_model_a_declined_result(live_client: httpx.AsyncClient) -> None:
    run_id, request = await asked(live_client, team=approving_team("graph"))
    r = await answer(live_client, run_id, request["request_id"], decision="reject", content="Not today.")
    assert r.status_code == 202, r.text
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded", run
    result = one(events, "tool.result")
    assert result["is_error"] is True
    assert result["content"] == (
        "A person declined this call of the tool 'calculator'; it did not run. Their reason: Not today."
    )
    received = one(events, "input.received")
    assert received["decision"] == "reject" and received["reason"] == "Not today."
    texts = [
        m["text"] for m in await history(live_client, run["conversation_id"]) if m["type"] == "ToolApprovalMessage"
    ]
    assert texts == ['Declined the call of \'calculator\' with {"expression": "2 + 3"}. Reason: Not today.']


async def test_an_edit_runs_the_call_with_the_edited_arguments(live_client: httpx.AsyncClient) -> None:
    run_id, request = await asked(live_client, team=approving_team("chain", steps=[{"agent": "solver"}]))
    assert request.get("step") == 1  # a chain's request says where it was asked
    edited = {"expression": "3 * 3"}
    r = await answer(live_client, run_id, request["request_id"], decision="edit", arguments=edited)
    assert r.status_code == 202, r.text
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded", run
    result = one(events, "tool.result")
    assert result["is_error"] is False
    assert result["content"].endswith('it ran with {"expression": "3 * 3"}. Result: 9')
    received = one(events, "input.received")
    assert received["decision"] == "edit" and received["arguments"] == edited
    messages = await history(live_client, run["conversation_id"])
    (decision,) = [m for m in messages if m["type"] == "ToolApprovalMessage"]
    assert 'it runs with {"expression": "3 * 3"}' in decision["text"]
    # a later run of another team in the conversation gets its history replayed, the decision included
    later = await live_client.post(
        "/v1/runs/wait",
        json=run_body(
            task="And now?", conversation_id=run["conversation_id"], team=team(kind="single", members=[agent("a")])
        ),
    )
    assert later.status_code == 200 and later.json()["status"] == "succeeded", later.text


async def test_two_answers_racing_one_is_accepted_the_other_is_a_conflict(live_client: httpx.AsyncClient) -> None:
    # after the call the model hangs: both answers meet the live run, whichever comes second
    run_id, request = await asked(live_client, team=approving_team(then={"hang": True}))
    first, second = await asyncio.gather(
        answer(live_client, run_id, request["request_id"], decision="approve"),
        answer(live_client, run_id, request["request_id"], decision="reject", content="No."),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [202, 409], (first.text, second.text)
    loser = first if first.status_code == 409 else second
    assert loser.json()["code"] == "not_awaiting_input"
    late = await answer(live_client, run_id, request["request_id"], decision="approve")
    assert late.status_code == 409 and late.json()["code"] == "not_awaiting_input"
    await wait_for_status(live_client, run_id, {"running"})
    assert (await live_client.post(f"/v1/runs/{run_id}/cancel")).json()["status"] == "cancelled"
    _, events = await finished(live_client, run_id)
    received = one(events, "input.received")
    winner = "approve" if first.status_code == 202 else "reject"
    assert received["decision"] == winner
    assert one(events, "tool.result")["is_error"] is (winner == "reject")


async def test_answers_that_do_not_fit_are_refused_and_nothing_is_answered(live_client: httpx.AsyncClient) -> None:
    run_id, request = await asked(live_client, team=approving_team())
    rid = request["request_id"]
    refused = {
        "decision_required": await answer(live_client, run_id, rid, content="yes"),
        "edit_arguments_required": await answer(live_client, run_id, rid, decision="edit"),
        "arguments_without_edit": await answer(live_client, run_id, rid, decision="approve", arguments={"a": 1}),
        "invalid_tool_arguments": await answer(live_client, run_id, rid, decision="edit", arguments={"expr": "1"}),
    }
    for code, r in refused.items():
        assert r.status_code == 422 and r.json()["code"] == code, r.text
    assert "expression" in refused["invalid_tool_arguments"].json()["detail"]
    assert (await live_client.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_input"
    assert "input.received" not in [e["type"] for e in await stored_events(live_client, run_id)]
    ok = await answer(live_client, run_id, rid, decision="edit", arguments={"expression": "10 - 4"})
    assert ok.status_code == 202, ok.text
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded"
    assert one(events, "tool.result")["content"].endswith("Result: 6")


async def test_a_decision_to_a_plain_input_request_is_refused(live_client: httpx.AsyncClient) -> None:
    people = team(
        kind="graph",
        members=[{"name": "human", "kind": "user_proxy"}, agent("helper", "fake/t3")],
        edges=[{"source": "human", "target": "helper"}],
        max_messages=3,
    )
    run_id, request = await asked(live_client, team=people)
    assert request["kind"] == "input" and "tool" not in request
    r = await answer(live_client, run_id, request["request_id"], decision="approve")
    assert r.status_code == 422 and r.json()["code"] == "not_an_approval_request", r.text
    r = await answer(live_client, run_id, request["request_id"])
    assert r.status_code == 422 and r.json()["code"] == "content_required", r.text
    ok = await answer(live_client, run_id, request["request_id"], content="Hello.")
    assert ok.status_code == 202, ok.text
    run, _ = await finished(live_client, run_id)
    assert run["status"] == "succeeded"


async def test_an_unanswered_approval_times_out(live_client: httpx.AsyncClient) -> None:
    r = await live_client.post("/v1/runs/wait", json=run_body(team=approving_team(), input_timeout_s=0.3))
    run = r.json()
    assert run["status"] == "timed_out" and run["error"]["code"] == "input_timeout", run


async def test_approve_tools_must_be_tools_of_the_agent(live_client: httpx.AsyncClient) -> None:
    solver = agent("solver", "fake/t3", tools=["calculator"], approve_tools=["current_time"])
    r = await live_client.post("/v1/runs", json=run_body(team=team(kind="single", members=[solver])))
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["type"] == "approval_for_unknown_tool"
    assert error["loc"][-2:] == ["approve_tools", 0]


async def test_the_operator_marks_tools_that_need_approval(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        tools=["tests.fixtures.tools:shout"],
        tools_require_approval=["shout"],
        tools_idempotent=["shout"],
    )
    with LiveServer(settings) as server:
        services = server.services
        assert services.tools.requires_approval("shout") and services.tools.idempotent("shout")
        async with server.client() as client:
            # no `approve_tools`: the operator's mark asks for every agent
            spec = approving_team(tool="shout", arguments={"text": "hi"}, member={"approve_tools": []})
            run_id, request = await asked(client, team=spec)
            assert request["tool"] == {**request["tool"], "name": "shout", "arguments": {"text": "hi"}}
            assert (await answer(client, run_id, request["request_id"], decision="approve")).status_code == 202
            run, events = await finished(client, run_id)
            assert run["status"] == "succeeded"
            assert one(events, "tool.result")["content"] == "HI!"


async def test_an_unknown_tool_in_the_operators_lists_stops_the_start(tmp_path: Path) -> None:
    for setting in ("tools_require_approval", "tools_idempotent"):
        with pytest.raises(ValueError, match="no tool named 'nope'"):
            async with serve_app(make_settings(tmp_path, **{setting: ["nope"]})):
                pass


async def test_two_calls_in_one_reply_are_asked_one_after_the_other(live_client: httpx.AsyncClient) -> None:
    calls = [{"name": "calculator", "arguments": {"expression": e}} for e in ("1 + 1", "2 + 2")]
    solver = agent(
        "solver",
        "fake/t3",
        tools=["calculator"],
        approve_tools=["calculator"],
        reflect_on_tool_use=True,
        model_options={"script": [{"tool_calls": calls}, {"text": "Done."}]},
    )
    run_id, first = await asked(live_client, team=team(kind="single", members=[solver], max_messages=None))
    assert (await answer(live_client, run_id, first["request_id"], decision="approve")).status_code == 202
    while True:  # the second is asked once the first is answered
        requests = [e["data"] for e in await stored_events(live_client, run_id) if e["type"] == "input.requested"]
        if len(requests) == 2:
            break
        await asyncio.sleep(0.02)
    second = requests[1]
    assert second["request_id"] != first["request_id"]
    assert {first["tool"]["arguments"]["expression"], second["tool"]["arguments"]["expression"]} == {"1 + 1", "2 + 2"}
    assert (await answer(live_client, run_id, second["request_id"], decision="reject")).status_code == 202
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded"
    results = {e["data"]["call_id"]: e["data"] for e in events if e["type"] == "tool.result"}
    assert results[first["tool"]["call_id"]]["is_error"] is False
    assert results[second["tool"]["call_id"]]["is_error"] is True


async def test_a_decision_over_the_socket(live_server: LiveServer) -> None:
    async with WsClient(live_server.url) as ws:
        start = {"type": "run.start", "id": "1", **run_body(team=approving_team())}
        run_id = (await ws.reply_to(start))["run"]["id"]
        request = (await ws.until(lambda f: f.get("type") == "input.requested"))[-1]["data"]
        assert request["kind"] == "approval"
        frame = {"type": "input", "id": "a", "run_id": run_id, "request_id": request["request_id"]}
        error = await ws.reply_to({**frame, "content": "sure"})
        assert error["type"] == "error" and error["code"] == "decision_required"
        ack = await ws.reply_to({**frame, "id": "b", "decision": "edit", "arguments": {"expression": "7 * 6"}})
        assert ack["type"] == "ack"
        await ws.wait_for(lambda f: f.get("type") == "subscription.ended" and f.get("run_id") == run_id)
        events = events_of(ws.frames, run_id)
    assert events[-1]["type"] == "run.completed"
    assert one(events, "tool.result")["content"].endswith("Result: 42")


async def test_cancel_while_an_approval_waits(live_client: httpx.AsyncClient) -> None:
    run_id, request = await asked(live_client, team=approving_team())
    r = await live_client.post(f"/v1/runs/{run_id}/cancel")
    assert r.json()["status"] == "cancelled", r.text
    _, events = await finished(live_client, run_id)
    assert "input.received" not in [e["type"] for e in events]
    late = await answer(live_client, run_id, request["request_id"], decision="approve")
    assert late.status_code == 409 and late.json()["code"] == "not_awaiting_input"


async def test_an_approval_in_a_run_that_keeps_checkpoints(live_client: httpx.AsyncClient) -> None:
    # a run with retries stops its team after every turn (step mode): the decision is stored mid-turn
    run_id, request = await asked(live_client, team=approving_team(), retries=1)
    assert (await answer(live_client, run_id, request["request_id"], decision="approve")).status_code == 202
    run, events = await finished(live_client, run_id)
    assert run["status"] == "succeeded", run
    assert one(events, "tool.result")["content"] == "5"
    messages = await history(live_client, run["conversation_id"])
    assert [m["type"] for m in messages] == ["TextMessage", "ToolApprovalMessage", "TextMessage"]
