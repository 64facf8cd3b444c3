"""The database goes away mid-run (PostgreSQL refuses and cuts every connection), then comes back.

``/readyz`` turns false; the run fails ``storage_error`` once it cannot write; nothing is half
written (every message is stored with its event, or neither is); and the run's end is stored when
the database is back, so it does not stay ``running`` until a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, make_settings
from tests.faults.conftest import PostgresDatabase
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import read_events

pytestmark = pytest.mark.e2e


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.05)


async def outage_during_a_run(tmp_path: Path, database: PostgresDatabase) -> dict[str, Any]:
    settings = make_settings(tmp_path, database_url=database.url, storage_retry_s=0.5, readyz_timeout_s=1)
    with LiveServer(settings) as server:
        async with server.client() as client:
            r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t120-d5", max_messages=4)))
            run_id = r.json()["id"]
            seen: list[dict[str, Any]] = []
            ready_during: list[int] = []
            async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
                async for event in read_events(response):
                    seen.append(event)
                    if event["type"] == "message.completed" and event["data"]["agent"] != "user" and not ready_during:
                        await database.go_away()
                        ready_during.append((await client.get("/readyz")).status_code)

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await eventually(not_ready, "readyz turns false")
            during_outage = await client.get(f"/v1/runs/{run_id}")
            await database.come_back()

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, "readyz turns true again")

            async def settled() -> bool:
                return bool((await client.get(f"/v1/runs/{run_id}")).json()["status"] != "running")

            await eventually(settled, "the run's end is stored")
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            page = await client.get(
                f"/v1/runs/{run_id}/events", params={"limit": 1000}, headers={"accept": "application/json"}
            )
            messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
            conversation = (await client.get(f"/v1/conversations/{run['conversation_id']}")).json()
            return {
                "seen": seen,
                "run": run,
                "stored": page.json()["data"],
                "messages": messages,
                "conversation": conversation,
                "during_outage": during_outage,
            }


async def test_a_database_outage_fails_the_run_cleanly_and_it_settles_when_the_database_is_back(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    result = await outage_during_a_run(tmp_path, postgres_database)
    seen, run, stored = result["seen"], result["run"], result["stored"]
    # the watcher was told how the run ended, although that could not be stored at the time
    assert seen[-1]["type"] == "run.failed"
    assert seen[-1]["data"]["error"]["code"] == "storage_error"
    # reads during the outage are a clear 503, not a 500
    during = result["during_outage"]
    assert during.status_code == 503 and during.json()["code"] == "unavailable", during.text
    # stored once the database was back: the run failed, with that code
    assert run["status"] == "failed" and run["error"]["code"] == "storage_error"
    assert stored[-1]["type"] == "run.failed" and stored[-1]["seq"] == seen[-1]["seq"] == run["last_seq"]
    seqs = [e["seq"] for e in stored]
    assert seqs == sorted(set(seqs))
    assert [e["type"] for e in stored].count("run.failed") == 1
    # nothing half-written: the messages are exactly those whose event is stored, whole
    completed = {e["data"]["message_id"]: e["data"] for e in stored if e["type"] == "message.completed"}
    assert [m["id"] for m in result["messages"]] == list(completed)
    assert all(m["text"] == completed[m["id"]]["text"] for m in result["messages"])
    assert [m["agent"] for m in result["messages"]][:2] == ["user", "writer"]
    assert result["conversation"]["message_count"] == len(result["messages"])
    assert result["conversation"]["has_state"] is False
    # what watchers saw of those messages is what is stored
    seen_completed = [e["data"]["message_id"] for e in seen if e["type"] == "message.completed"]
    assert seen_completed == list(completed)


async def test_after_a_storage_failure_the_watched_stream_is_still_dense(
    tmp_path: Path, postgres_database: PostgresDatabase
) -> None:
    seen = (await outage_during_a_run(tmp_path, postgres_database))["seen"]
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1))
