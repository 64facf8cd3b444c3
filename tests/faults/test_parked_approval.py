"""A tool's approval parks the run (issue 24): across ``kill -9``, answered after the restart.

A round robin team whose clerk calls a tool that needs approval (``approve_tools``) parks at the call:
its team state is the one from before the clerk's turn (the run keeps a checkpoint per turn), so no
process holds it. After a ``kill -9`` and a restart the run is still ``awaiting_input``; the decision
resumes it, the clerk's turn played again up to the call (its reply is not asked of the model twice),
and the call runs as decided.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from app.runs.event_schemas import TypedRunEvent
from tests.e2e.test_streaming import assert_well_formed
from tests.faults.test_parked_runs import ENDED, messages_of, no_live_runs, parked_request, servers
from tests.fixtures.runs import start_run, stored_events, wait_for_status
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

SCRIPT = [{"text": "Let me think."}, {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}]


def approving_team() -> dict[str, Any]:
    clerk = agent("clerk", tools=["calculator"], approve_tools=["calculator"], model_options={"script": SCRIPT})
    return team(members=[clerk, agent("critic", "fake/t4")], max_messages=5)


ANSWERS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "approve": ({"decision": "approve"}, "42", False),
    "reject": ({"decision": "reject", "content": "not now"}, "A person declined", True),
    "edit": ({"decision": "edit", "arguments": {"expression": "6*8"}}, "Result: 48", False),
}


@pytest.mark.parametrize("decision", sorted(ANSWERS))
async def test_a_parked_approval_survives_kill_9_and_the_call_runs_as_decided(tmp_path: Path, decision: str) -> None:
    answer, result_text, is_error = ANSWERS[decision]
    prompts = tmp_path / "prompts.jsonl"
    async with servers(tmp_path, SWARM_FAKE_PROMPT_LOG=str(prompts)) as running:
        client = await running.start()
        run = await start_run(client, team=approving_team())
        request = (await parked_request(client, run["id"]))["data"]
        assert request["kind"] == "approval" and request["agent"] == "clerk"
        assert request["tool"]["name"] == "calculator" and request["tool"]["arguments"] == {"expression": "6*7"}
        await no_live_runs(client)  # parked: no process holds it
        running.kill()
        await client.aclose()

        client = await running.start()
        try:
            assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "awaiting_input"
            body = {"request_id": request["request_id"], **answer}
            first, second = await asyncio.gather(
                client.post(f"/v1/runs/{run['id']}/input", json=body),
                client.post(f"/v1/runs/{run['id']}/input", json=body),
            )
            assert sorted([first.status_code, second.status_code]) == [202, 409], (first.text, second.text)
            done = await wait_for_status(client, run["id"], ENDED)
            events = await stored_events(client, run["id"])
            messages = await messages_of(client, done)
        finally:
            await client.aclose()

    assert done["status"] == "succeeded", done
    assert_well_formed(events)  # one dense log: a park is no crash
    for raw in events:
        assert TypedRunEvent.model_validate(raw).root.model_dump(mode="json") == raw
    types = [e["type"] for e in events]
    assert "run.requeued" not in types and "run.resumed" not in types
    calls = [e for e in events if e["type"] == "tool.call"]
    results = [e for e in events if e["type"] == "tool.result"]
    assert len(calls) == 1 and len(results) == 1, "the call is logged once, and runs once"
    assert calls[0]["data"]["call_id"] == request["tool"]["call_id"] == results[0]["data"]["call_id"]
    assert result_text in results[0]["data"]["content"] and results[0]["data"]["is_error"] is is_error
    order = [types.index(t) for t in ("tool.call", "input.requested", "input.received", "tool.result")]
    assert order == sorted(order)
    received = next(e for e in events if e["type"] == "input.received")["data"]
    assert received["decision"] == decision
    # the history: each turn once, the decision by `user` before the call's result
    assert [m["agent"] for m in messages] == ["user", "clerk", "critic", "user", "clerk", "critic"]
    assert messages[3]["type"] == "ToolApprovalMessage"
    assert result_text in messages[4]["text"]
    # the clerk's reply that called the tool was not asked of the model again after the restart
    calls_of_the_tool = [line for line in prompts.read_text().splitlines() if "calculator" in json.loads(line)["reply"]]
    assert len(calls_of_the_tool) == 1


async def test_an_approval_in_the_run_s_first_turn_parks_and_resumes_from_the_task(tmp_path: Path) -> None:
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}]
    clerk = agent("clerk", tools=["calculator"], approve_tools=["calculator"], model_options={"script": script})
    async with servers(tmp_path) as running:
        client = await running.start()
        try:
            run = await start_run(client, team=team(members=[clerk, agent("critic", "fake/t4")], max_messages=4))
            request = (await parked_request(client, run["id"]))["data"]
            await no_live_runs(client)
            body = {"request_id": request["request_id"], "decision": "approve"}
            assert (await client.post(f"/v1/runs/{run['id']}/input", json=body)).status_code == 202
            done = await wait_for_status(client, run["id"], ENDED)
            events = await stored_events(client, run["id"])
            messages = await messages_of(client, done)
        finally:
            await client.aclose()
    assert done["status"] == "succeeded", done
    assert_well_formed(events)
    assert [e["data"]["content"] for e in events if e["type"] == "tool.result"] == ["4"]
    # the task is stored once, though the team was rebuilt from it
    assert [m["agent"] for m in messages] == ["user", "user", "clerk", "critic", "clerk"]
    assert messages[1]["type"] == "ToolApprovalMessage"


async def test_a_selector_team_parks_on_an_approval_and_its_pick_is_not_made_twice(tmp_path: Path) -> None:
    clerk = agent("clerk", tools=["calculator"], approve_tools=["calculator"], model_options={"script": SCRIPT})
    spec = team("choosing", kind="selector", selector_model="fake/t1", members=[clerk, agent("critic", "fake/t4")])
    spec["termination"] = {"max_messages": 5}
    async with servers(tmp_path) as running:
        client = await running.start()
        try:
            run = await start_run(client, team=spec)
            request = (await parked_request(client, run["id"]))["data"]
            await no_live_runs(client)
            picks_before = [
                e["data"]["agents"] for e in await stored_events(client, run["id"]) if e["type"] == "speaker.selected"
            ]
            body = {"request_id": request["request_id"], "decision": "approve"}
            assert (await client.post(f"/v1/runs/{run['id']}/input", json=body)).status_code == 202
            done = await wait_for_status(client, run["id"], ENDED)
            events = await stored_events(client, run["id"])
        finally:
            await client.aclose()
    assert done["status"] == "succeeded", done
    assert_well_formed(events)
    picks = [e["data"]["agents"] for e in events if e["type"] == "speaker.selected"]
    assert picks_before == [["clerk"], ["critic"], ["clerk"]]
    assert picks == [*picks_before, ["critic"]], "the pick of the parked turn is logged once"
    assert [e["data"]["content"] for e in events if e["type"] == "tool.result"] == ["42"]
