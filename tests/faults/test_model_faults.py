"""A model provider that errors, hangs, stalls mid-stream or drops the connection: the run ends
``failed`` with the right code, and every message committed before the fault is intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, serve_app
from tests.faults.provider import FaultyProvider
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent, run_body, team


@pytest.fixture
async def provider() -> AsyncIterator[FaultyProvider]:
    async with FaultyProvider().running() as p:
        yield p


@pytest.fixture
async def client(tmp_path: Path, provider: FaultyProvider) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        tmp_path,
        openai_compatible_base_url=provider.base_url,
        model_timeout_s=0.5,
        model_max_retries=0,
        run_timeout_s=30,
    )
    async with serve_app(settings) as (_, c):
        yield c


async def run_to_fault(client: httpx.AsyncClient, fault: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A writer that answers, then a critic whose provider misbehaves."""
    members = [agent("writer", "fake/t5"), agent("critic", f"openai_compatible/{fault}")]
    run = await wait_run(client, team=team(members=members, max_messages=4))
    return run, await stored_events(client, run["id"])


async def assert_committed_messages_intact(
    client: httpx.AsyncClient, run: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "stored seqs increase without duplicates"
    assert [e["type"] for e in events].count(events[-1]["type"]) == 1 and events[-1]["type"] == "run.failed"
    completed = {e["data"]["message_id"]: e["data"] for e in events if e["type"] == "message.completed"}
    messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["id"] for m in messages] == list(completed), "every completed message is stored, and only those"
    for m in messages:
        assert m["text"] == completed[m["id"]]["text"]
        deltas = "".join(
            e["data"]["text"] for e in events if e["type"] == "message.delta" and e["data"]["message_id"] == m["id"]
        )
        assert deltas in ("", m["text"]), "a stored message is whole"
    assert [m["agent"] for m in messages] == ["user", "writer"]
    assert run["message_count"] == 2
    conversation = (await client.get(f"/v1/conversations/{run['conversation_id']}")).json()
    assert conversation["message_count"] == 2 and conversation["has_state"] is False


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("err500", "model_error"),
        ("err429", "rate_limited"),
        ("hang", "model_timeout"),
        ("stall", "model_timeout"),
        ("drop", "model_error"),
    ],
)
async def test_a_provider_fault_fails_the_run_cleanly(
    client: httpx.AsyncClient, provider: FaultyProvider, fault: str, code: str
) -> None:
    run, events = await run_to_fault(client, fault)
    assert provider.requests >= 1
    assert run["status"] == "failed"
    assert run["error"]["code"] == code, run["error"]
    assert events[-1]["data"]["error"]["code"] == code
    await assert_committed_messages_intact(client, run, events)
    if fault in ("stall", "drop"):
        # the broken reply streamed a little, and was never stored as a message
        partial = [e for e in events if e["type"] == "message.delta" and e["data"]["agent"] == "critic"]
        assert partial and {e["data"]["message_id"] for e in partial}.isdisjoint(
            e["data"]["message_id"] for e in events if e["type"] == "message.completed"
        )


async def test_a_scripted_model_error_fails_the_run_with_model_error(client: httpx.AsyncClient) -> None:
    critic = agent("critic", "fake/t5", model_options={"script": [{"error": "upstream exploded"}]})
    r = await client.post("/v1/runs/wait", json=run_body(team=team(members=[agent("writer", "fake/t5"), critic])))
    run = r.json()
    assert run["status"] == "failed" and run["error"]["code"] == "model_error"
    assert "upstream exploded" in run["error"]["message"] and "Traceback" not in run["error"]["message"]
    page = await client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
    await assert_committed_messages_intact(client, run, page.json()["data"])
