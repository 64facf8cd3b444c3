"""A run that starts a new conversation reads nothing before it starts, and its stream reads nothing
before its first event; a run in an existing conversation still loads the conversation's context
(but not its own events: a new run has only its ``run.queued``).

Counted on the statements the server sends to the database (the embedded mode: in the distributed
mode a run is claimed from the database, so the executor reads it there by design).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.conftest import services_of
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect

pytestmark = pytest.mark.embedded_only


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    seen: list[str] = []
    database = services_of(app).database
    engines = {database.engine.sync_engine, database.read_engine.sync_engine}  # writes, reads

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def reads_of(seen: list[str], table: str) -> list[str]:
    return [s for s in seen if s.startswith("SELECT") and f"FROM {table}" in s]


async def test_a_new_conversation_s_run_reads_no_context_and_its_stream_reads_no_events(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    with statements(app) as seen:
        events = await collect(client, "/v1/runs/stream", method="POST", json=run_body(team=team(max_messages=2)))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run.queued" and events[-1]["type"] == "run.completed"
    assert reads_of(seen, "run_events") == []
    assert reads_of(seen, "conversations") == []
    assert reads_of(seen, "messages") == []
    assert any(s.startswith("INSERT INTO messages") for s in seen)  # it did run, and store


async def test_a_run_in_an_existing_conversation_loads_its_context(app: FastAPI, client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/runs/wait", json=run_body(team=team(max_messages=2)))
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]
    with statements(app) as seen:
        second = await client.post(
            "/v1/runs/wait", json=run_body(team=team(max_messages=2), conversation_id=conversation_id)
        )
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "succeeded"
    assert reads_of(seen, "conversations")  # its saved state, read when the run starts
    assert reads_of(seen, "messages") == []  # the team state fits: no history to replay
    assert reads_of(seen, "run_events") == []  # a new run's last event is its run.queued, known
