"""Deltas are stored a message's run at a time (one row per run of consecutive deltas, never one per
token) and replayed exactly as they were streamed: same seqs, texts, times and key order, from any
seq, including one in the middle of a stored run."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.runs.models import RunEvent
from tests.conftest import services_of
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect


async def test_deltas_take_few_rows_and_replay_exactly_as_streamed(app: FastAPI, client: httpx.AsyncClient) -> None:
    run = (await client.post("/v1/runs", json=run_body(team=team(model="fake/t40", max_messages=3)))).json()
    async with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
        live_text = (await response.aread()).decode()
    live = await collect(client, f"/v1/runs/{run['id']}/events")
    deltas = [e for e in live if e["type"] == "message.delta"]
    assert len(deltas) >= 80

    async with services_of(app).read_sessionmaker() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(RunEvent)
            .where(RunEvent.run_id == run["id"], RunEvent.type == "message.delta")
        )
    assert rows is not None and rows <= len(deltas) // 10, f"{rows} rows for {len(deltas)} deltas"

    # the stored log, read back, is byte for byte the stream the watcher got
    replayed_text = ""
    async with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
        replayed_text = (await response.aread()).decode()
    assert replayed_text == live_text

    # resuming inside a stored run of deltas, from SSE and from JSON pages
    for after in (deltas[0]["seq"], deltas[1]["seq"], deltas[len(deltas) // 2]["seq"], deltas[-1]["seq"] - 1):
        tail = await collect(client, f"/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(after)})
        assert tail == [e for e in live if e["seq"] > after]
        pages: list[dict[str, Any]] = []
        cursor = after
        while True:
            page = (
                await client.get(
                    f"/v1/runs/{run['id']}/events",
                    params={"after": cursor, "limit": 7},
                    headers={"accept": "application/json"},
                )
            ).json()
            pages.extend(page["data"])
            cursor = page["last_seq"]
            assert len(page["data"]) <= 7
            if not page["has_more"]:
                break
        assert pages == tail
