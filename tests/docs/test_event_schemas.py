"""The documented event schemas hold for what the server really emits: every type, every field.

Runs that between them produce every event type are read back from the log and each event is
validated against ``TypedRunEvent`` (the union the OpenAPI document and generated clients use).
A field the schemas do not list fails the test too: the documentation would be missing it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import BaseModel

from app.runs.event_schemas import EVENT_TYPES, TypedRunEvent
from tests.fixtures.runs import start_run, stored_events, wait_for_status, wait_run
from tests.fixtures.specs import agent, team

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}


async def finished(client: httpx.AsyncClient, spec: dict[str, Any]) -> str:
    return str((await wait_run(client, team=spec))["id"])


async def answered(client: httpx.AsyncClient) -> str:
    spec = team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)
    run_id = str((await start_run(client, team=spec))["id"])
    await wait_for_status(client, run_id, {"awaiting_input"})
    request = next(e for e in await stored_events(client, run_id) if e["type"] == "input.requested")["data"]
    r = await client.post(f"/v1/runs/{run_id}/input", json={"request_id": request["request_id"], "content": "Yes."})
    assert r.status_code == 202, r.text
    await wait_for_status(client, run_id, TERMINAL)
    return run_id


async def cancelled(client: httpx.AsyncClient) -> str:
    run_id = str((await start_run(client, team=team(model="fake/t2000-d5")))["id"])
    await wait_for_status(client, run_id, {"running"})
    await client.post(f"/v1/runs/{run_id}/cancel")
    await wait_for_status(client, run_id, {"cancelled"})
    return run_id


def unlisted_fields(model: BaseModel, path: str = "") -> list[str]:
    found = [f"{path}.{k}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += unlisted_fields(value, f"{path}.{name}")
    return found


async def test_every_event_the_server_emits_matches_its_documented_schema(client: httpx.AsyncClient) -> None:
    tool_script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]}, {"text": "42"}]
    chain = {
        "name": "chain",
        "kind": "chain",
        "members": [
            agent("good", "fake/t3"),
            agent("broken", "fake/t3", model_options={"script": [{"error": "boom"}]}),
            agent("summary", "fake/t3"),
        ],
        "steps": [{"parallel": [{"agent": "good"}, {"agent": "broken"}]}, {"agent": "summary"}],
        "tolerate_failures": True,
    }
    runs = [
        await finished(client, team(max_messages=3)),
        await finished(
            client,
            team(
                kind="single",
                members=[agent("solver", "fake/t4", tools=["calculator"], model_options={"script": tool_script})],
                max_messages=None,
            ),
        ),
        await finished(
            client,
            team(
                kind="swarm",
                members=[
                    agent("triage", "fake/t3", handoffs=["expert"], model_options={"script": [{"handoff": "expert"}]}),
                    agent("expert", "fake/t3"),
                ],
                max_messages=4,
            ),
        ),
        await finished(
            client,
            team(
                kind="selector", members=[agent("a", "fake/t3"), agent("b", "fake/t3")], selector_model="fake/default"
            ),
        ),
        await finished(client, chain),
        await finished(
            client,
            team(
                kind="single",
                members=[agent("thinker", "fake/t3", model_options={"script": [{"reasoning": "Hm.", "text": "Yes."}]})],
                max_messages=None,
            ),
        ),
        await finished(client, team(members=[agent("writer", "fake/fail")])),
        await answered(client),
        await cancelled(client),
    ]
    events = [e for events in await asyncio.gather(*(stored_events(client, r) for r in runs)) for e in events]
    seen: set[str] = set()
    for raw in events:
        typed = TypedRunEvent.model_validate(raw).root
        assert typed.model_dump(mode="json") == raw, "the schema must describe the event exactly, nothing dropped"
        assert unlisted_fields(typed.data) == [], f"{raw['type']} carries fields its schema does not list: {raw}"
        seen.add(typed.type)
    # `run.requeued` and `run.resumed` need a process that dies under a run: tests/faults/test_crash_resume.py
    # and tests/scaleout check them against their schemas
    assert seen == set(EVENT_TYPES) - {"run.requeued", "run.resumed"}, f"not exercised: {set(EVENT_TYPES) - seen}"
