"""What a run does with each kind of team and each way it can end (in-process, fake model)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runtime.recorder import EventRecorder
from tests.conftest import Backend, serve_app
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent, team


async def test_a_tool_call_and_its_result_are_events_and_the_run_goes_on(client: httpx.AsyncClient) -> None:
    script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
        {"text": "done"},
    ]
    member = agent("solver", "fake/t4", tools=["calculator"], model_options={"script": script})
    run = await wait_run(client, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "succeeded"
    events = await stored_events(client, run["id"])
    call = next(e for e in events if e["type"] == "tool.call")
    result = next(e for e in events if e["type"] == "tool.result")
    assert call["data"]["name"] == "calculator"
    assert call["data"]["call_id"] == result["data"]["call_id"]
    assert result["data"]["content"] == "42"
    assert result["data"]["is_error"] is False
    assert call["seq"] < result["seq"]


async def test_a_raising_tool_gives_is_error_and_the_run_finishes(client: httpx.AsyncClient) -> None:
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "import os"}}]}]
    member = agent("solver", "fake/t4", tools=["calculator"], model_options={"script": script})
    run = await wait_run(client, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "succeeded"
    result = next(e for e in await stored_events(client, run["id"]) if e["type"] == "tool.result")
    assert result["data"]["is_error"] is True


async def test_swarm_hand_offs_are_events_and_change_the_speaker(client: httpx.AsyncClient) -> None:
    members = [
        agent("triage", "fake/t3", handoffs=["expert"], model_options={"script": [{"handoff": "expert"}]}),
        agent("expert", "fake/t3"),
    ]
    run = await wait_run(client, team=team(kind="swarm", members=members, max_messages=4))
    assert run["status"] == "succeeded"
    events = await stored_events(client, run["id"])
    handoff = next(e for e in events if e["type"] == "handoff")
    assert handoff["data"]["source"] == "triage" and handoff["data"]["target"] == "expert"
    speakers = [e["data"]["agent"] for e in events if e["type"] == "message.completed"]
    assert speakers[0] == "user" and "expert" in speakers[speakers.index("triage") :]


async def test_selector_teams_emit_speaker_selected(client: httpx.AsyncClient) -> None:
    members = [agent("a", "fake/t3"), agent("b", "fake/t3"), agent("c", "fake/t3")]
    run = await wait_run(
        client, team=team(kind="selector", members=members, max_messages=4, selector_model="fake/default")
    )
    assert run["status"] == "succeeded"
    events = await stored_events(client, run["id"])
    selected = [e["data"]["agents"] for e in events if e["type"] == "speaker.selected"]
    spoke = [e["data"]["agent"] for e in events if e["type"] == "message.completed" and e["data"]["agent"] != "user"]
    assert len(selected) == 3
    assert [s[0] for s in selected] == spoke


async def test_a_failing_model_fails_the_run_with_a_stable_code(client: httpx.AsyncClient) -> None:
    member = agent("broken", "fake/t3", model_options={"script": [{"error": "upstream exploded"}]})
    run = await wait_run(client, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "model_error"
    assert "upstream exploded" in run["error"]["message"]
    assert "Traceback" not in run["error"]["message"]
    events = await stored_events(client, run["id"])
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"]["error"]["code"] == "model_error"


async def test_a_run_over_its_time_limit_ends_timed_out(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=team(model="fake/t1000-d5", max_messages=3), timeout_s=0.3)
    assert run["status"] == "timed_out"
    assert run["error"]["code"] == "timed_out"
    events = await stored_events(client, run["id"])
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"]["status"] == "timed_out"


async def test_text_mention_ends_the_team(client: httpx.AsyncClient) -> None:
    run = await wait_run(
        client, team=team(model="fake/t3-end", max_messages=None, termination={"text_mention": "TERMINATE"})
    )
    assert run["status"] == "succeeded"
    assert run["message_count"] == 2
    assert "TERMINATE" in run["stop_reason"]


async def test_usage_is_the_sum_of_the_messages(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=team(max_messages=4))
    messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert run["usage"]["completion_tokens"] == sum(m["usage"]["completion_tokens"] for m in messages) > 0
    assert run["usage"]["prompt_tokens"] == sum(m["usage"]["prompt_tokens"] for m in messages) > 0


async def test_a_model_that_fails_twice_then_answers_completes_the_run(client: httpx.AsyncClient) -> None:
    script = [
        {"error": "overloaded", "error_kind": "transient"},
        {"error": "slow down", "error_kind": "rate_limited"},
        {"text": "Here it is."},
    ]
    member = agent("flaky", "fake/t3", model_options={"script": script})
    run = await wait_run(client, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "succeeded"
    assert run["result"]["text"] == "Here it is."


async def test_a_model_that_always_times_out_fails_the_run_with_model_timeout(backend: Backend, tmp_path: Path) -> None:
    settings = backend.settings(tmp_path, model_timeout_s=0.1, model_max_retries=1)
    async with serve_app(settings) as (_, c):
        member = agent("stuck", "fake/t3", model_options={"script": [{"hang": True}] * 5})
        run = await wait_run(c, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "model_timeout"
    assert run["error"]["message"] == "The model did not answer within 0.1 s."
    # within the configured bound: two attempts of 0.1 s and a short backoff, far below the run's limit (600 s)
    took = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
    assert took.total_seconds() < 10


async def test_rate_limits_that_never_end_fail_the_run_with_rate_limited(client: httpx.AsyncClient) -> None:
    member = agent("limited", "fake/t3", model_options={"script": [{"error": "429", "error_kind": "rate_limited"}] * 5})
    run = await wait_run(client, team=team(kind="single", members=[member], max_messages=None))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "rate_limited"


async def test_the_task_s_message_is_stored_with_run_started_in_one_commit(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first token waits for one commit before its model call: run.started and the task's
    message go in one transaction, and the message the team puts out again is not stored twice."""
    commits: list[tuple[str | None, str | None]] = []
    original = EventRecorder.commit

    async def counted(self: EventRecorder, env: Any, apply: Any = None, *, then: Any = None) -> None:
        commits.append((env and env.type, then and then.type))
        await original(self, env, apply, then=then)

    monkeypatch.setattr(EventRecorder, "commit", counted)
    first = await wait_run(client, task="first question")
    second = await wait_run(client, task="second question", conversation_id=first["conversation_id"])
    for run, task in ((first, "first question"), (second, "second question")):
        assert run["status"] == "succeeded"
        events = await stored_events(client, run["id"])
        assert [e["type"] for e in events[:3]] == ["run.queued", "run.started", "message.completed"]
        asked = [e["data"] for e in events if e["type"] == "message.completed" and e["data"]["agent"] == "user"]
        position = 1 if run is first else first["message_count"] + 1
        assert [(m["text"], m["position"]) for m in asked] == [(task, position)]
    assert commits.count(("run.started", "message.completed")) == 2
    assert ("run.started", None) not in commits
    r = await client.get(f"/v1/conversations/{first['conversation_id']}/messages")
    texts = [m["text"] for m in r.json()["data"] if m["agent"] == "user"]
    assert texts == ["first question", "second question"]  # each stored once, in order
