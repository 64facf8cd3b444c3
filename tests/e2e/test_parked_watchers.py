"""Watchers of a parked run (embedded): nothing polls the database for them; the process wakes them
when the run resumes here, or when it settles it (a cancel, an expiry)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.runtime import streams
from tests.e2e.test_streaming import assert_well_formed
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import read_events

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

ASKING = team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


@pytest.fixture(autouse=True)
def no_rechecks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher of a parked run looks at storage on its own only once an hour: what it gets in the
    test, it got because it was woken."""
    monkeypatch.setattr(streams, "IDLE_RECHECK_S", 3600.0)


async def _parked(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    run = (await client.post("/v1/runs", json=run_body(team=ASKING))).json()
    async with asyncio.timeout(30):
        while (now := (await client.get(f"/v1/runs/{run['id']}")).json())["status"] != "awaiting_input":
            assert now["status"] in ("queued", "running"), now
            await asyncio.sleep(0.02)
    page = (await client.get(f"/v1/runs/{run['id']}/events/page", params={"limit": 1000})).json()["data"]
    (request,) = [e["data"] for e in page if e["type"] == "input.requested"]
    return run["id"], request


async def _watch(client: httpx.AsyncClient, run_id: str, seen: list[dict[str, Any]], parked: asyncio.Event) -> None:
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for event in read_events(response):
            seen.append(event)
            if event["type"] == "input.requested":
                parked.set()


@pytest.mark.parametrize("ending", ["answer", "cancel"])
async def test_a_watcher_of_a_parked_run_is_woken_by_its_resume_or_its_end(
    live_client: httpx.AsyncClient, ending: str
) -> None:
    run_id, request = await _parked(live_client)
    seen: list[dict[str, Any]] = []
    parked = asyncio.Event()
    watcher = asyncio.create_task(_watch(live_client, run_id, seen, parked))
    async with asyncio.timeout(30):
        await parked.wait()  # it has read the stored log up to the request, and now waits
        if ending == "answer":
            body = {"request_id": request["request_id"], "content": "Go on."}
            assert (await live_client.post(f"/v1/runs/{run_id}/input", json=body)).status_code == 202
        else:
            assert (await live_client.post(f"/v1/runs/{run_id}/cancel")).status_code == 200
        await watcher  # within the timeout: woken, not by an hourly look
    assert_well_formed(seen)
    assert seen[-1]["type"] == ("run.completed" if ending == "answer" else "run.cancelled")
