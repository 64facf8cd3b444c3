"""Every recorded provider answer as a whole run: the event log a client reads, the usage, analytics.

Each transcript (``transcripts/``) answers a one-agent team's model, on the fast token path and on
AutoGen's own (``SWARM_FAST_TOKENS=false``). For an answer: the deltas of each message join to its
``message.completed`` text under the same id, reasoning streams apart and is the message's
``reasoning``, and the run's usage is the sum of its model calls, as analytics says too. For an
error: the run fails with the transcript's code and a readable message. Either way every read of
the run answers (its log, its messages) and the log ends with one terminal event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.core.settings import Settings
from app.runs.models import ModelCallRecord
from tests.conftest import Backend, services_of
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent
from tests.providers.replay import CLOSING_TEXT, CLOSING_USAGE, ReplayServer, transcripts
from tests.providers.test_conformance import TAG

ALL = sorted(transcripts())


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(seed=11).running() as server:
        yield server


@pytest.fixture(params=[True, False], ids=["fast", "stock"])
def settings(request: pytest.FixtureRequest, backend: Backend, tmp_path: Path, replay: ReplayServer) -> Settings:
    return backend.settings(
        tmp_path, openai_compatible_base_url=replay.base_url, fast_tokens=request.param, model_max_retries=0
    )


async def run_transcript(client: httpx.AsyncClient, stem: str, *, reflect: bool) -> dict[str, Any]:
    member = agent("solo", f"openai_compatible/{stem}", reflect_on_tool_use=reflect)
    return await wait_run(
        client, team={"name": "probe", "kind": "single", "members": [member]}, task="What is the weather?"
    )


async def read_all(client: httpx.AsyncClient, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's log and messages, as a client reads them: every read answers."""
    events = await stored_events(client, run["id"])
    r = await client.get(f"/v1/conversations/{run['conversation_id']}/messages")
    assert r.status_code == 200, r.text
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "dense seqs"
    assert sum(e["type"] in ("run.completed", "run.failed", "run.cancelled") for e in events) == 1
    return events


def check_joins(events: list[dict[str, Any]], *, fast: bool) -> dict[str, dict[str, Any]]:
    """Deltas join to their message's text, reasoning to its ``reasoning``, under one id."""
    texts: dict[str, list[str]] = defaultdict(list)
    thoughts: dict[str, list[str]] = defaultdict(list)
    completed = {e["data"]["message_id"]: e["data"] for e in events if e["type"] == "message.completed"}
    for e in events:
        if e["type"] == "message.delta":
            texts[e["data"]["message_id"]].append(e["data"]["text"])
        elif e["type"] == "reasoning.delta":
            assert fast, "reasoning streams on the fast token path only"
            thoughts[e["data"]["message_id"]].append(e["data"]["text"])
    for message_id, parts in texts.items():
        assert message_id in completed, "deltas that never became a message"
        assert "".join(parts) == completed[message_id]["text"]
    for message_id, parts in thoughts.items():
        if message_id in completed:  # a call that streamed only reasoning before its tool calls has no message
            assert "".join(parts) == completed[message_id]["reasoning"]
    return completed


async def billed(app: FastAPI, run_id: str) -> tuple[int, int, bool]:
    async with services_of(app).read_sessionmaker() as session:
        calls = (await session.scalars(select(ModelCallRecord).where(ModelCallRecord.run_id == run_id))).all()
    assert calls
    return (
        sum(c.prompt_tokens for c in calls),
        sum(c.completion_tokens for c in calls),
        any(c.usage_estimated for c in calls),
    )


@pytest.mark.parametrize("stem", ALL)
async def test_a_transcript_as_a_run(stem: str, app: FastAPI, client: httpx.AsyncClient, settings: Settings) -> None:
    t = transcripts()[stem]
    expected = t.expected
    tools = bool(expected.get("tool_calls"))
    run = await run_transcript(client, stem, reflect=tools)
    events = await read_all(client, run)
    if t.fails:
        assert run["status"] == "failed", run
        error = run["error"]
        assert error["code"] == expected["error"]["code"], error
        assert all(part in error["message"] for part in expected["error"]["message_contains"]), error
        assert len(error["message"]) <= 500 and not TAG.search(error["message"])
        assert events[-1]["type"] == "run.failed" and events[-1]["data"]["error"] == error
        return
    assert run["status"] == "succeeded", run
    completed = check_joins(events, fast=settings.fast_tokens)
    answers = [m for m in completed.values() if m["agent"] == "solo"]
    if tools:
        calls = [e["data"] for e in events if e["type"] == "tool.call"]
        assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
            (c["id"], c["name"], c["arguments"]) for c in expected["tool_calls"]
        ]
        assert answers[-1]["text"] == CLOSING_TEXT  # the reflection's answer, after the tool's result
        if expected["text"]:
            assert answers[0]["type"] == "ThoughtEvent" and answers[0]["text"] == expected["text"]
    else:
        assert [(m["type"], m["text"]) for m in answers] == [("TextMessage", expected["text"])]
        assert answers[0].get("reasoning", "") == expected["reasoning"]
        if t.streams and expected["text"]:
            assert any(e["type"] == "message.delta" for e in events), "a streamed answer streams"
        if t.streams and expected["reasoning"] and settings.fast_tokens:
            assert any(e["type"] == "reasoning.delta" for e in events), "reasoning streams apart"
    # usage: the run's is the sum of its calls', as the provider reported (or as estimated), and analytics agrees
    prompt, completion, estimated = await billed(app, run["id"])
    assert (run["usage"]["prompt_tokens"], run["usage"]["completion_tokens"]) == (prompt, completion)
    assert run["usage"]["estimated"] is estimated is (expected["usage"] is None)
    if expected["usage"] is not None:
        extra = CLOSING_USAGE if tools else {"prompt_tokens": 0, "completion_tokens": 0}
        assert prompt == expected["usage"]["prompt_tokens"] + extra["prompt_tokens"]
        assert completion == expected["usage"]["completion_tokens"] + extra["completion_tokens"]
    now = datetime.now(UTC)
    window = {"since": (now - timedelta(hours=1)).isoformat(), "until": (now + timedelta(hours=1)).isoformat()}
    r = await client.get("/v1/analytics/teams", params=window)
    assert r.status_code == 200, r.text
    (row,) = r.json()["data"]
    assert (row["usage"]["prompt_tokens"], row["usage"]["completion_tokens"]) == (prompt, completion)
    final = events[-1]["data"]["usage"]
    assert (final["prompt_tokens"], final["completion_tokens"]) == (prompt, completion)
