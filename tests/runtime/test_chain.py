"""Chain teams: steps in order, parallel branches concurrently, tags, failures and synthesis."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from app.runs.models import ModelCallRecord
from tests.conftest import services_of
from tests.fixtures.problems import assert_problem
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent


def chain(members: list[dict[str, Any]], steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "chain", "kind": "chain", "members": members, "steps": steps, **extra}


async def run_chain(client: httpx.AsyncClient, spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run = await wait_run(client, team=spec)
    return run, await stored_events(client, run["id"])


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


async def test_a_parallel_step_runs_its_branches_concurrently(client: httpx.AsyncClient, app: Any) -> None:
    # each branch's model takes 400 ms before answering. Run concurrently, every branch's model call has
    # started before any has ended; one after another, each would start after the one before it ended.
    # Read from the calls' own records (when each began, how long it took), not from a wall clock's
    # margin, so a busy machine cannot make it pass or fail
    members = [agent(n, "fake/t2-f400") for n in ("a", "b", "c")]
    run, events = await run_chain(
        client, chain(members, [{"parallel": [{"agent": "a"}, {"agent": "b"}, {"agent": "c"}]}])
    )
    assert run["status"] == "succeeded", run
    async with services_of(app).sessionmaker() as session:
        calls = list(await session.scalars(select(ModelCallRecord).where(ModelCallRecord.run_id == run["id"])))
    assert sorted(c.agent for c in calls) == ["a", "b", "c"]
    ends = [c.started_at + timedelta(milliseconds=c.duration_ms) for c in calls]
    assert all(c.duration_ms >= 400 for c in calls)
    assert max(c.started_at for c in calls) < min(ends), "every branch began before any ended"
    completed = next(e for e in events if e["type"] == "step.completed")
    assert set(completed["data"]["outputs"]) == {"a", "b", "c"}


async def test_outputs_feed_the_next_step_and_every_event_is_tagged(client: httpx.AsyncClient) -> None:
    members = [
        agent("research", "fake/t3", model_options={"script": [{"text": "Fact one."}]}),
        agent("critic", "fake/t3", model_options={"script": [{"text": "Looks fine."}]}),
        agent("writer", "fake/t3"),
        agent("editor", "fake/t3", model_options={"script": [{"text": "Final text."}]}),
    ]
    steps = [
        {"agent": "research"},
        {"parallel": [{"agent": "critic"}, {"agent": "writer"}], "template": "Task: {task}\nNotes: {input}"},
    ]
    run, events = await run_chain(client, chain(members, steps, synthesizer="editor"))
    assert run["status"] == "succeeded", run
    assert run["result"]["text"] == "Final text."
    completed = [e["data"] for e in events if e["type"] == "message.completed"]
    assert completed[0]["agent"] == "user" and "step" not in completed[0]
    by_agent = {m["agent"]: m for m in completed[1:]}
    assert by_agent["research"]["step"] == 1 and by_agent["research"]["branch"] == "research"
    assert by_agent["critic"]["step"] == 2 and by_agent["writer"]["branch"] == "writer"
    assert by_agent["editor"]["step"] == 3
    # the writer's model saw the template filled with the research output
    assert by_agent["writer"]["text"].startswith("Fake reply 1 after 2 messages")
    for e in events:
        if e["type"] == "message.delta":
            assert e["data"]["branch"] == e["data"]["agent"]
            assert e["data"]["step"] in (1, 2, 3)
    outputs = [e["data"]["outputs"] for e in events if e["type"] == "step.completed"]
    assert outputs[0] == {"research": "Fact one."}
    assert outputs[1]["critic"] == "Looks fine."
    messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert messages[0]["agent"] == "user" and len(messages) == 5


async def test_a_failing_branch_fails_the_run_and_cancels_its_siblings(client: httpx.AsyncClient) -> None:
    members = [
        agent("slow", "fake/t2000-d5"),
        agent("broken", "fake/t3", model_options={"script": [{"error": "quota exceeded"}]}),
    ]
    run, events = await run_chain(client, chain(members, [{"parallel": [{"agent": "slow"}, {"agent": "broken"}]}]))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "model_error"
    assert "broken" in run["error"]["message"] and "quota exceeded" in run["error"]["message"]
    # the slow sibling was stopped long before its 2000 words
    assert not any(e["type"] == "message.completed" and e["data"]["agent"] == "slow" for e in events)
    assert sum(e["type"] == "message.delta" for e in events) < 2000
    assert events[-1]["type"] == "run.failed"


async def test_tolerated_failures_are_reported_and_the_chain_goes_on(client: httpx.AsyncClient) -> None:
    members = [
        agent("good", "fake/t3", model_options={"script": [{"text": "Useful."}]}),
        agent("broken", "fake/t3", model_options={"script": [{"error": "boom"}]}),
        agent("summary", "fake/t3"),
    ]
    steps = [{"parallel": [{"agent": "good"}, {"agent": "broken"}]}, {"agent": "summary"}]
    run, events = await run_chain(client, chain(members, steps, tolerate_failures=True))
    assert run["status"] == "succeeded", run
    failed = next(e["data"] for e in events if e["type"] == "branch.failed")
    assert failed["branch"] == "broken" and failed["error"]["code"] == "model_error"
    assert next(e["data"]["outputs"] for e in events if e["type"] == "step.completed") == {"good": "Useful."}


async def test_a_step_can_be_a_stored_team(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/teams",
        json={
            "name": "duo",
            "members": [agent("x", "fake/t3"), agent("y", "fake/t3")],
            "termination": {"max_messages": 3},
        },
    )
    assert r.status_code == 201
    run, events = await run_chain(client, chain([agent("lead", "fake/t3")], [{"agent": "lead"}, {"team": "duo"}]))
    assert run["status"] == "succeeded", run
    step2 = [e["data"]["agent"] for e in events if e["type"] == "message.completed" and e["data"].get("step") == 2]
    assert step2 == ["x", "y"]


async def test_bad_chains_are_refused(client: httpx.AsyncClient) -> None:
    a = [agent("a")]
    r = await client.post("/v1/teams", json=chain(a, []))
    assert_problem(r, 422, "invalid_team")
    r = await client.post("/v1/teams", json=chain(a, [{"agent": "ghost"}]))
    assert_problem(r, 422, "unknown_member")
    assert r.json()["errors"][0]["loc"] == ["body", "steps", 0, "agent"]
    r = await client.post("/v1/teams", json=chain(a, [{"team": "nope"}]))
    assert_problem(r, 422, "unknown_team")
    r = await client.post("/v1/teams", json=chain(a, [{"agent": "a", "template": "{input} {secret}"}]))
    assert_problem(r, 422, "invalid_template")
    r = await client.post("/v1/teams", json=chain(a, [{"parallel": [{"agent": "a"}, {"agent": "a"}]}]))
    assert_problem(r, 422, "duplicate_branch")
    r = await client.post("/v1/teams", json=chain(a, [{"agent": "a"}], synthesizer="ghost"))
    assert_problem(r, 422, "unknown_member")
    r = await client.post("/v1/teams", json=chain(a, [{"agent": "a", "team": "t"}]))
    assert r.status_code == 422
    ok = await client.post("/v1/teams", json=chain(a, [{"agent": "a"}]))
    assert ok.status_code == 201
    r = await client.post("/v1/teams", json=chain(a, [{"team": "chain"}]) | {"name": "outer"})
    assert_problem(r, 422, "invalid_team")
