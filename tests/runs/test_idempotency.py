"""`Idempotency-Key` on every route that starts a run: a repeat gets the same run, and a stream resumes.

A generic SSE client retries a cut ``POST /v1/runs/stream`` with ``Last-Event-ID``; with the key the
retry resumes the run it started instead of starting (and billing) a second one. Runs are counted in
the database itself, through an engine of the test's own. A run that must still be going when the
test acts waits on a person's input (``asking_team``): it cannot end before the test answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.db import create_engine
from app.core.settings import Settings
from app.runs.models import Run
from app.runs.repository import RunEventRepository
from app.runs.service import RunService
from tests.conftest import LiveServer, asgi_client
from tests.e2e.test_streaming import assert_well_formed
from tests.e2e.ws import WsClient
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_problem
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import collect

REPLAYED = "idempotent-replayed"


def asking_team() -> dict[str, Any]:
    """An assistant, then a person (the run waits for the answer), then the assistant again."""
    return team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


def keyed(key: str, **more: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **more}


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The test's own engine on the app's database: what is stored, not what the API says."""
    engine = create_engine(settings.database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def runs_with_key(db: AsyncEngine, key: str) -> list[tuple[str, str]]:
    async with db.connect() as conn:
        rows = await conn.execute(select(Run.id, Run.principal_id).where(Run.idempotency_key == key).order_by(Run.id))
        return [(r[0], r[1]) for r in rows]


async def run_count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Run))).scalar_one())


async def stored_log(db: AsyncEngine, run_id: str) -> list[dict[str, Any]]:
    """The run's events as the database holds them, as the envelopes a stream sends."""
    async with AsyncSession(db) as session:
        events, last = await RunEventRepository(session).after(run_id, 0, limit=10_000)
    assert last
    return [json.loads(e.json()) for e in events]


# -- one key, one run ----------------------------------------------------------------------------


async def test_the_same_key_twice_is_one_run_on_every_route(live_client: httpx.AsyncClient, db: AsyncEngine) -> None:
    body = run_body(team=team(model="fake/t4", max_messages=2))
    first = await live_client.post("/v1/runs", json=body, headers=keyed("order-7"))
    assert first.status_code == 202, first.text
    assert REPLAYED not in first.headers
    run_id = first.json()["id"]

    again = await live_client.post("/v1/runs", json=body, headers=keyed("order-7"))
    assert again.status_code == 202, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.headers["location"] == f"/v1/runs/{run_id}"
    assert again.json()["id"] == run_id

    # the same key names the same run on the other start routes: /wait answers it once it has ended
    waited = await live_client.post("/v1/runs/wait", json=body, headers=keyed("order-7"))
    assert waited.status_code == 200, waited.text
    assert waited.headers[REPLAYED] == "true"
    assert waited.json()["id"] == run_id and waited.json()["status"] == "succeeded"

    # ... and /stream replays it, stored, from the start or after Last-Event-ID
    async with live_client.stream("POST", "/v1/runs/stream", json=body, headers=keyed("order-7")) as response:
        assert response.headers[REPLAYED] == "true"
        assert response.headers["content-location"] == f"/v1/runs/{run_id}"
    replay = await collect(live_client, "/v1/runs/stream", method="POST", json=body, headers=keyed("order-7"))
    assert_well_formed(replay)
    assert replay == await stored_log(db, run_id)
    tail = await collect(
        live_client, "/v1/runs/stream", method="POST", json=body, headers=keyed("order-7", **{"Last-Event-ID": "3"})
    )
    assert tail == replay[3:]
    # resuming after its last event: nothing more to send, and an EventSource is told to stop
    done = keyed("order-7", **{"Last-Event-ID": str(replay[-1]["seq"])})
    ended = await live_client.post("/v1/runs/stream", json=body, headers=done)
    assert ended.status_code == 204 and ended.content == b"", ended.text
    assert ended.headers[REPLAYED] == "true"

    assert await runs_with_key(db, "order-7") == [(run_id, "local")]
    assert await run_count(db) == 1


async def test_a_cut_stream_retried_with_its_key_resumes_the_same_run(live_server: LiveServer, db: AsyncEngine) -> None:
    """What a generic SSE client does (here ``httpx-sse``): the cut POST again, with ``Last-Event-ID``."""
    body = run_body(team=asking_team())
    seen: list[dict[str, Any]] = []
    async with live_server.client() as client:
        async with aconnect_sse(client, "POST", "/v1/runs/stream", json=body, headers=keyed("cut-1")) as source:
            assert REPLAYED not in source.response.headers
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # a ping
                seen.append(sse.json())
                assert sse.id == str(seen[-1]["seq"])
                if sse.event == "message.delta":
                    break  # the connection is cut here, mid-message; the run goes on
        run_id = seen[0]["run_id"]
        last = seen[-1]["seq"]

        retry = keyed("cut-1", **{"Last-Event-ID": str(last)})
        async with aconnect_sse(client, "POST", "/v1/runs/stream", json=body, headers=retry) as source:
            assert source.response.status_code == 200
            assert source.response.headers[REPLAYED] == "true"
            answered = False
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                event = sse.json()
                assert event["run_id"] == run_id and sse.id == str(event["seq"])
                seen.append(event)
                if event["type"] == "input.requested":
                    # the run waits for this answer: the stream resumed a live run, not a stored one
                    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "awaiting_input"
                    answer = {"request_id": event["data"]["request_id"], "content": "Yes."}
                    r = await client.post(f"/v1/runs/{run_id}/input", json=answer)
                    assert r.status_code == 202, r.text
                    answered = True
        assert answered

        assert_well_formed(seen)  # no seq twice, none missing, one terminal event
        assert seen[-1]["type"] == "run.completed"
        assert seen == await stored_log(db, run_id)
    assert await runs_with_key(db, "cut-1") == [(run_id, "local")]
    assert await run_count(db) == 1


async def test_the_same_key_with_another_body_is_a_422_and_starts_nothing(
    live_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    first = await live_client.post("/v1/runs", json=run_body(task="Plan a picnic."), headers=keyed("k-1"))
    assert first.status_code == 202, first.text
    run_id = first.json()["id"]
    for path in ("/v1/runs", "/v1/runs/stream", "/v1/runs/wait"):
        r = await live_client.post(path, json=run_body(task="Plan a party."), headers=keyed("k-1"))
        problem = assert_problem(r, 422, "idempotency_key_reused")
        assert run_id in problem["detail"]
        assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    # the same body with its fields in another order and its defaults spelt out is the same request
    same = {"if_busy": "reject", **dict(reversed(list(run_body(task="Plan a picnic.").items())))}
    again = await live_client.post("/v1/runs", json=same, headers=keyed("k-1"))
    assert again.status_code == 202 and again.json()["id"] == run_id
    assert await runs_with_key(db, "k-1") == [(run_id, "local")]
    assert await run_count(db) == 1


@pytest.mark.parametrize(
    "bad",
    [b"", b"x" * 256, b"caf\xe9", b'""'],
    ids=["empty", "too-long", "not-ascii", "empty-quoted"],
)
async def test_a_bad_key_is_a_422_and_starts_nothing(client: httpx.AsyncClient, db: AsyncEngine, bad: bytes) -> None:
    for path in ("/v1/runs", "/v1/runs/stream", "/v1/runs/wait"):
        r = await client.post(path, json=run_body(), headers={"Idempotency-Key": bad})  # type: ignore[dict-item]
        problem = assert_problem(r, 422, "invalid_request")
        assert [e["loc"] for e in problem["errors"]] == [["header", "Idempotency-Key"]]
    assert await run_count(db) == 0


async def test_the_longest_key_and_its_quoted_form_name_one_run(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    longest = await client.post("/v1/runs", json=run_body(), headers=keyed("k" * 255))
    assert longest.status_code == 202, longest.text
    first = await client.post("/v1/runs", json=run_body(), headers=keyed("0b7c-9f1e"))
    assert first.status_code == 202, first.text
    # draft-ietf-httpapi-idempotency-key-header sends the key as a quoted string: the same key
    quoted = await client.post("/v1/runs", json=run_body(), headers=keyed('"0b7c-9f1e"'))
    assert quoted.status_code == 202 and quoted.headers[REPLAYED] == "true"
    assert quoted.json()["id"] == first.json()["id"]
    assert await run_count(db) == 2


# -- principals, the window, races -----------------------------------------------------------------


async def test_a_key_of_another_principal_never_matches(app: FastAPI, db: AsyncEngine) -> None:
    async with asgi_client(app) as client:
        alice = await api_key_headers(app, "alice")
        bob = await api_key_headers(app, "bob")
        picnic = run_body(task="Plan a picnic.")
        a = await client.post("/v1/runs", json=picnic, headers={**alice, **keyed("k")})
        # alice's very request, key and all, from bob: a run of his own
        b = await client.post("/v1/runs", json=picnic, headers={**bob, **keyed("k")})
        assert a.status_code == b.status_code == 202, (a.text, b.text)
        assert REPLAYED not in b.headers and a.json()["id"] != b.json()["id"]
        # another body under a key of bob's: alice's own first request, not a reuse
        assert (await client.post("/v1/runs", json=run_body(task="Bob's."), headers={**bob, **keyed("k2")})).is_success
        d = await client.post("/v1/runs", json=run_body(task="Alice's."), headers={**alice, **keyed("k2")})
        assert d.status_code == 202 and REPLAYED not in d.headers, d.text
        for who, run in ((alice, a), (bob, b)):
            again = await client.post("/v1/runs", json=picnic, headers={**who, **keyed("k")})
            assert again.json()["id"] == run.json()["id"] and again.headers[REPLAYED] == "true"
    assert sorted(await runs_with_key(db, "k")) == sorted([(a.json()["id"], "alice"), (b.json()["id"], "bob")])
    assert await run_count(db) == 4


async def test_a_key_past_its_window_starts_a_new_run(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    first = (await client.post("/v1/runs", json=run_body(task="Old task."), headers=keyed("reused"))).json()
    # the window has passed (moved in the database, not waited for)
    async with db.begin() as conn:
        await conn.execute(
            update(Run)
            .where(Run.id == first["id"])
            .values(created_at=datetime.fromisoformat(first["created_at"]) - timedelta(hours=25))
        )
    r = await client.post("/v1/runs", json=run_body(task="New task."), headers=keyed("reused"))
    assert r.status_code == 202, r.text
    assert REPLAYED not in r.headers and r.json()["id"] != first["id"]
    assert await runs_with_key(db, "reused") == [(r.json()["id"], "local")]
    assert await run_count(db) == 2
    assert (await client.get(f"/v1/runs/{first['id']}")).status_code == 200  # the old run stays


async def test_concurrent_first_requests_make_one_run(live_client: httpx.AsyncClient, db: AsyncEngine) -> None:
    body = run_body(team=team(model="fake/t3", max_messages=2))
    answers = await asyncio.gather(*[live_client.post("/v1/runs", json=body, headers=keyed("burst")) for _ in range(8)])
    assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(REPLAYED not in r.headers for r in answers) == 1  # one started it; the others got it back
    assert len(await runs_with_key(db, "burst")) == 1
    assert await run_count(db) == 1


async def test_concurrent_first_requests_in_a_conversation_are_not_busy_with_each_other(
    live_client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """A run in an existing conversation is written under the admission lock: the requests that
    follow the first find its run there, rather than a conversation busy with it (409)."""
    quick = team(model="fake/t3", max_messages=2)
    done = await live_client.post("/v1/runs/wait", json=run_body(team=quick))
    assert done.status_code == 200, done.text
    body = run_body(team=quick, task="And now?", conversation_id=done.json()["conversation_id"])
    answers = await asyncio.gather(
        *[live_client.post("/v1/runs", json=body, headers=keyed("in-conversation")) for _ in range(8)]
    )
    assert [r.status_code for r in answers] == [202] * 8, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert len(await runs_with_key(db, "in-conversation")) == 1
    assert await run_count(db) == 2


@pytest.mark.parametrize("task", ["Same task.", "Other task."])
async def test_the_loser_of_the_unique_index_answers_with_the_winners_run(
    client: httpx.AsyncClient, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    """Two first requests that both looked before either was written: the unique index decides.

    The interleaving is made, not waited for: the second request's looks find nothing, as if the first
    run's rows were still on their way, until its own insert has failed."""
    winner = await client.post("/v1/runs", json=run_body(task="Same task."), headers=keyed("race"))
    assert winner.status_code == 202, winner.text
    looks = 0
    real = RunService._earlier

    async def not_yet_written(self: RunService, key: Any) -> Run | None:
        nonlocal looks
        looks += 1
        return None if looks <= 2 else await real(self, key)  # before admission, and under its lock

    monkeypatch.setattr(RunService, "_earlier", not_yet_written)
    r = await client.post("/v1/runs", json=run_body(task=task), headers=keyed("race"))
    assert looks == 3, "the second request reached the unique index"
    if task == "Same task.":
        assert r.status_code == 202, r.text
        assert r.json()["id"] == winner.json()["id"] and r.headers[REPLAYED] == "true"
    else:
        assert_problem(r, 422, "idempotency_key_reused")
    monkeypatch.undo()
    assert await runs_with_key(db, "race") == [(winner.json()["id"], "local")]
    assert await run_count(db) == 1
    # nothing of the loser's start was left behind, and the server starts runs as before
    after = await client.post("/v1/runs/wait", json=run_body(task="Afterwards."))
    assert after.status_code == 200 and after.json()["status"] == "succeeded", after.text
    assert len((await client.get("/v1/conversations")).json()["data"]) == 2


# -- the WebSocket -------------------------------------------------------------------------------


async def test_run_start_frames_take_the_key_too(live_server: LiveServer, db: AsyncEngine) -> None:
    body = run_body(team=team(model="fake/t3", max_messages=2))
    async with WsClient(live_server.url) as ws:
        first = await ws.reply_to({"type": "run.start", "id": "1", "idempotency_key": "ws-1", **body})
        assert first["type"] == "ack" and first["replayed"] is False, first
        again = await ws.reply_to(
            {"type": "run.start", "id": "2", "idempotency_key": "ws-1", "subscribe": False, **body}
        )
        assert again["type"] == "ack" and again["replayed"] is True
        assert again["run"]["id"] == first["run"]["id"]
        bad = await ws.reply_to({"type": "run.start", "id": "3", "idempotency_key": "x" * 256, **body})
        assert bad["type"] == "error" and bad["code"] == "invalid_request" and "idempotency_key" in bad["message"]
        other = await ws.reply_to({"type": "run.start", "id": "4", "idempotency_key": "ws-1", **run_body()})
        assert other["type"] == "error" and other["code"] == "idempotency_key_reused"
    async with live_server.client() as client:
        # one key names one run whichever way it was started
        r = await client.post("/v1/runs", json=body, headers=keyed("ws-1"))
        assert r.json()["id"] == first["run"]["id"] and r.headers[REPLAYED] == "true"
    assert len(await runs_with_key(db, "ws-1")) == 1
    assert await run_count(db) == 1


async def test_starts_without_a_key_are_untouched(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    ids = {(await client.post("/v1/runs", json=run_body())).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    assert await run_count(db) == 3
