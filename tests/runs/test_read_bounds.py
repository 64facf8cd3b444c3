"""Reading a run's events and a conversation's messages with what a client sends: seqs out of range, a
`Last-Event-ID` that is no seq, a resume after the end, the JSON page of events, the WebSocket's `after`.

A bad value is a clear 4xx naming it, never a 500, a stream cut short or a silent replay from seq 1; a
resume after the end of a finished run is a 204, which tells an `EventSource` to stop reconnecting.
The greatest seq a request may name (2^31 - 1, PostgreSQL's integer) is read on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.core.settings import Settings
from app.main import create_app
from app.runs.models import Run, RunEvent
from app.runs.sse import MAX_SEQ
from app.ws import connection
from tests.conftest import LiveServer, services_of
from tests.e2e.ws import WsClient
from tests.fixtures.browser import CHROMIUM, HEADLESS, MISSING
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.runs import stored_events, wait_for_status, wait_run
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import collect, read_events

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
TOO_BIG = (MAX_SEQ + 1, 2**63, 10**30)
SLOW = "fake/t400-d5"  # two seconds a reply: still going while the test acts; always cancelled


def urls(run: dict[str, Any]) -> dict[str, str]:
    return {
        "events": f"/v1/runs/{run['id']}/events",
        "page": f"/v1/runs/{run['id']}/events/page",
        "messages": f"/v1/conversations/{run['conversation_id']}/messages",
    }


@pytest.fixture
async def finished(client: httpx.AsyncClient) -> dict[str, Any]:
    return await wait_run(client, expect="succeeded")


# -- seqs out of range ---------------------------------------------------------------------------


async def test_an_after_out_of_range_is_a_422_naming_it_on_every_read(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    read = urls(finished)
    reads = [
        (read["events"], {}),  # SSE
        (read["events"], {"accept": "application/json"}),
        (read["page"], {}),
        (read["messages"], {}),
    ]
    for url, headers in reads:
        for value in TOO_BIG:
            r = await client.get(url, params={"after": value}, headers=headers)
            assert_field_error(r, ["query", "after"], "less_than_equal", code="invalid_request")
        r = await client.get(url, params={"after": -1}, headers=headers)
        assert_field_error(r, ["query", "after"], "greater_than_equal", code="invalid_request")
    # nothing was lost: the whole log is still there
    assert [e["seq"] for e in await stored_events(client, finished["id"])] == list(range(1, finished["last_seq"] + 1))


async def test_the_greatest_seq_reads_as_past_the_end_on_every_backend(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    read = urls(finished)
    r = await client.get(read["page"], params={"after": MAX_SEQ})
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [], "last_seq": MAX_SEQ, "has_more": False}
    r = await client.get(read["events"], params={"after": MAX_SEQ}, headers={"accept": "application/json"})
    assert r.status_code == 200 and r.json()["data"] == []
    r = await client.get(read["messages"], params={"after": MAX_SEQ})
    assert r.status_code == 200 and r.json()["data"] == []
    assert (await client.get(read["events"], headers={"last-event-id": str(MAX_SEQ)})).status_code == 204


async def test_a_last_event_id_out_of_range_is_a_422_naming_the_header(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    url = urls(finished)["events"]
    for accept in ({}, {"accept": "application/json"}):
        for value in TOO_BIG:
            r = await client.get(url, headers={"last-event-id": str(value), **accept})
            assert_field_error(r, ["header", "last-event-id"], "less_than_equal", code="invalid_request")
        r = await client.get(url, headers={"last-event-id": "-1", **accept})
        assert_field_error(r, ["header", "last-event-id"], "greater_than_equal", code="invalid_request")


# -- a Last-Event-ID that is no seq --------------------------------------------------------------


async def test_a_last_event_id_that_is_no_integer_is_a_400_not_a_replay_from_the_start(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    url = urls(finished)["events"]
    for value in ("abc", "1.5", "1e3", "0x10", "seq-3"):
        for accept in ({}, {"accept": "application/json"}):
            r = await client.get(url, headers={"last-event-id": value, **accept})
            body = assert_problem(r, 400, "invalid_last_event_id")
            assert "Last-Event-ID" in body["detail"]


async def test_an_empty_last_event_id_is_none_and_a_padded_one_is_read(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    url = urls(finished)["events"]
    everything = await collect(client, url)
    assert [e["seq"] for e in everything] == list(range(1, finished["last_seq"] + 1))
    # the SSE spec's empty id is "no last event": the whole run, as without the header
    assert await collect(client, url, headers={"last-event-id": ""}) == everything
    assert await collect(client, url, headers={"last-event-id": " 3 "}) == everything[3:]


# -- resuming after the end ----------------------------------------------------------------------


async def test_resuming_a_finished_run_after_its_last_event_is_a_204(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    url, last = urls(finished)["events"], finished["last_seq"]
    for headers, params in (
        ({"last-event-id": str(last)}, {}),
        ({}, {"after": last}),
        ({"last-event-id": str(last + 100)}, {}),
        ({"last-event-id": str(last)}, {"after": 1}),  # the header wins
    ):
        r = await client.get(url, headers=headers, params=params)
        assert r.status_code == 204, (headers, params, r.text)
        assert r.content == b"" and "content-type" not in r.headers
    # one before the end: the terminal event, then the stream ends
    tail = await collect(client, url, headers={"last-event-id": str(last - 1)})
    assert [e["seq"] for e in tail] == [last] and tail[0]["type"] in TERMINAL
    # the JSON page past the end is an empty page, as before
    r = await client.get(urls(finished)["page"], params={"after": last})
    assert r.status_code == 200 and r.json() == {"data": [], "last_seq": last, "has_more": False}


async def test_a_terminal_event_past_a_gap_is_sent_to_a_resume_inside_the_gap(
    app: FastAPI, client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    """A run settled after its process died numbers its terminal event past every seq it may have sent
    (``lost_after_seq``): a watcher that got unstored events up to inside that gap still gets the end."""
    run_id, last = finished["id"], finished["last_seq"]
    jumped = last + 50
    async with services_of(app).sessionmaker() as session:
        await session.execute(
            update(RunEvent).where(RunEvent.run_id == run_id, RunEvent.seq == last).values(seq=jumped)
        )
        await session.execute(update(Run).where(Run.id == run_id).values(last_seq=jumped))
        await session.commit()
    url = urls(finished)["events"]
    for resume in (last - 1, last, last + 10, jumped - 1):
        tail = await collect(client, url, headers={"last-event-id": str(resume)})
        assert [e["seq"] for e in tail] == [jumped] and tail[0]["type"] == "run.completed", resume
    assert (await client.get(url, headers={"last-event-id": str(jumped)})).status_code == 204


async def test_a_run_still_going_is_followed_from_its_last_stored_event_not_204(live_server: LiveServer) -> None:
    async with live_server.client() as client:
        r = await client.post("/v1/runs", json=run_body(team=team(model=SLOW, max_messages=3)))
        assert r.status_code == 202, r.text
        run = r.json()
        url = urls(run)["events"]
        try:
            # the run is started and nothing more is stored for now (its first reply takes 2 s)
            await wait_for_status(client, run["id"], {"running"})
            stored = (await client.get(urls(run)["page"])).json()["last_seq"]
            async with client.stream("GET", url, headers={"last-event-id": str(stored)}) as response:
                assert response.status_code == 200
                assert (await client.post(f"/v1/runs/{run['id']}/cancel")).status_code in (200, 202)
                rest = [e async for e in read_events(response)]
        finally:
            await client.post(f"/v1/runs/{run['id']}/cancel")
        assert rest and rest[0]["seq"] == stored + 1 and rest[-1]["type"] == "run.cancelled"
        assert [e["seq"] for e in rest] == list(range(stored + 1, rest[-1]["seq"] + 1))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
async def test_an_event_source_left_open_after_the_end_stops_at_the_204(
    live_server: LiveServer, finished_live: dict[str, Any]
) -> None:
    """A browser's `EventSource` reconnects (with `Last-Event-ID`) whenever a stream ends; a 204 is the one
    answer that makes it stop. Before, a finished run's empty stream had it reconnect every 3 s for ever."""
    from playwright.async_api import async_playwright

    url = f"{live_server.url}{urls(finished_live)['events']}"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=HEADLESS)
        try:
            page = await browser.new_page()
            await page.goto(live_server.url + "/healthz")
            watched = page.evaluate(
                """(url) => new Promise((resolve) => {
                    const source = new EventSource(url);  // never closed by the page
                    const ends = [];
                    let opens = 0;
                    source.onopen = () => { opens += 1; };
                    source.addEventListener("run.completed", (m) => ends.push(JSON.parse(m.data).seq));
                    source.onerror = () => {
                        if (source.readyState === EventSource.CLOSED) resolve({ opens, ends });
                    };
                })""",
                url,
            )
            outcome = await asyncio.wait_for(watched, 30)  # a bound: it ends after one reconnect, ~3 s
        finally:
            await browser.close()
    assert outcome == {"opens": 1, "ends": [finished_live["last_seq"]]}


# -- the JSON page of events ---------------------------------------------------------------------


async def test_the_event_page_is_json_whatever_the_accept_and_pages_through_the_log(
    client: httpx.AsyncClient, finished: dict[str, Any]
) -> None:
    url, everything = urls(finished)["page"], await stored_events(client, finished["id"])
    for accept in ("*/*", "text/event-stream", "application/json", "text/html"):
        r = await client.get(url, headers={"accept": accept})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", accept
        assert r.json() == {"data": everything, "last_seq": everything[-1]["seq"], "has_more": False}
    paged: list[dict[str, Any]] = []
    after, has_more = 0, True
    while has_more:
        page = (await client.get(url, params={"after": after, "limit": 4})).json()
        assert len(page["data"]) <= 4
        paged += page["data"]
        after, has_more = page["last_seq"], page["has_more"]
    assert paged == everything
    assert_problem(await client.get("/v1/runs/run_nobody/events/page"), 404, "not_found")


def test_the_document_bounds_every_seq_and_keeps_the_json_page_apart_from_the_stream() -> None:
    doc = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    ops = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    stream = ops["stream_run_events"]
    # a generated client calling the stream gets a stream, typed as one
    assert set(stream["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {"204", "400", "404", "422"} <= set(stream["responses"])
    params = {p["name"]: p for p in stream["parameters"]}
    assert params["Last-Event-ID"]["in"] == "header"
    assert params["Last-Event-ID"]["schema"] == {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
    assert "limit" not in params
    page = ops["list_run_events"]
    assert set(page["responses"]["200"]["content"]) == {"application/json"}
    assert page["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventPage"
    }
    for operation_id in ("stream_run_events", "list_run_events", "list_conversation_messages"):
        after = next(p for p in ops[operation_id]["parameters"] if p["name"] == "after")
        assert (after["schema"]["minimum"], after["schema"]["maximum"]) == (0, MAX_SEQ), operation_id


# -- the WebSocket's `after` -----------------------------------------------------------------------


@pytest.fixture
async def finished_live(live_server: LiveServer) -> AsyncIterator[dict[str, Any]]:
    async with live_server.client() as client:
        yield await wait_run(client, expect="succeeded")


async def test_a_subscribe_after_out_of_range_is_an_error_frame_and_the_socket_goes_on(
    live_server: LiveServer, finished_live: dict[str, Any]
) -> None:
    run_id = finished_live["id"]
    async with WsClient(live_server.url) as ws:
        for after in (*TOO_BIG, -1):
            reply = await ws.reply_to({"type": "subscribe", "id": f"s{after}", "run_id": run_id, "after": after})
            assert reply["type"] == "error" and reply["for"] == "subscribe", reply
            assert reply["code"] == "invalid_request" and str(MAX_SEQ) in reply["message"]
        # the greatest seq subscribes: nothing is after it, and the subscription ends there
        reply = await ws.reply_to({"type": "subscribe", "id": "max", "run_id": run_id, "after": MAX_SEQ})
        assert reply["type"] == "ack" and reply["after"] == MAX_SEQ
        ended = await ws.wait_for(lambda f: f.get("type") == "subscription.ended")
        assert ended == {"type": "subscription.ended", "run_id": run_id, "last_seq": MAX_SEQ}
        # and from the start, everything
        await ws.reply_to({"type": "subscribe", "id": "all", "run_id": run_id, "after": 0})
        await ws.until(lambda f: f.get("type") == "subscription.ended")
        seqs = [f["seq"] for f in ws.frames if f.get("run_id") == run_id and "seq" in f]
        assert seqs == list(range(1, finished_live["last_seq"] + 1))


async def test_a_follower_that_fails_says_so_on_the_socket(
    live_server: LiveServer, finished_live: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("the event log is unreadable")
        yield  # an async generator

    monkeypatch.setattr(connection, "follow", broken)
    run_id = finished_live["id"]
    async with WsClient(live_server.url) as ws:
        reply = await ws.reply_to({"type": "subscribe", "id": "s", "run_id": run_id, "after": 0})
        assert reply["type"] == "ack"
        error = await ws.wait_for(lambda f: f.get("type") == "error" and f.get("run_id") == run_id)
        assert error["for"] == "subscribe" and error["code"] == "internal_error"
        assert "unreadable" not in error["message"]  # logged, never sent
        # the socket goes on
        assert (await ws.reply_to({"type": "ping", "id": "p"}))["type"] == "pong"
