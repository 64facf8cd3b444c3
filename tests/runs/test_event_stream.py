"""The SSE response (``EventStream``): frames, pings, a stalled client, a client that goes, a server that stops.

The unit tests drive the ASGI response with a scripted ``send`` and ``receive``; every wait is bounded by an
event the test observes, never by a guess at how long something takes. The last test follows a live run
on a real uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from app.runs.sse import PING, SEP, SSE_HEADERS, EventStream
from app.runtime.bus import EventBus
from tests.conftest import LiveServer, make_settings
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import run_body, team

SCOPE = {"type": "http", "method": "GET", "path": "/v1/runs/r/events"}
BOUND_S = 10.0  # what "soon" may take at most on a loaded machine; passing never depends on it


class Client:
    """The ASGI side of one connection: what was sent, a disconnect on demand, writes that can stall."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.gone = asyncio.Event()
        self.stall_after: int | None = None  # body writes that complete before every later one blocks
        self.stalled = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        body = message["type"] == "http.response.body"
        if body and self.stall_after is not None and len(self.bodies()) >= self.stall_after:
            self.stalled.set()
            await asyncio.Future()  # a client that reads nothing: the write never completes
        self.sent.append(message)
        self.changed.set()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]

    async def until(self, condition: Any) -> None:
        async with asyncio.timeout(BOUND_S):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Frames:
    """A stream's frames, released one by one; it records whether it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncGenerator[bytes, None]:
        try:
            while (frame := await self.queue.get()) is not None:
                yield frame
        finally:
            self.closed.set()


def stream(frames: Frames, *, ping_s: float = 60, send_timeout_s: float = 60, **headers: str) -> EventStream:
    return EventStream(frames(), ping=ping_s, send_timeout=send_timeout_s, sep=SEP, headers={**SSE_HEADERS, **headers})


def frame(seq: int) -> bytes:
    return f"id: {seq}\r\nevent: run.queued\r\ndata: {{}}\r\n\r\n".encode()


async def test_frames_go_out_in_order_with_the_sse_headers_and_the_response_ends() -> None:
    client, frames = Client(), Frames()
    for seq in (1, 2, 3):
        frames.queue.put_nowait(frame(seq))
    frames.queue.put_nowait(None)
    response = stream(frames, **{"Content-Location": "/v1/runs/r"})
    await response(SCOPE, client.receive, client.send)

    start = client.sent[0]
    headers = dict(start["headers"])
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"
    assert headers[b"content-location"] == b"/v1/runs/r"
    assert client.bodies() == [frame(1), frame(2), frame(3), b""]
    assert client.sent[-1]["more_body"] is False
    assert frames.closed.is_set()


async def test_an_idle_stream_gets_pings_and_a_busy_one_does_not() -> None:
    client, frames = Client(), Frames()
    response = stream(frames, ping_s=0.05)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await client.until(lambda: client.bodies().count(PING) >= 2)  # nothing to send: pings keep it open
    frames.queue.put_nowait(frame(1))
    frames.queue.put_nowait(None)
    async with asyncio.timeout(BOUND_S):
        await task
    bodies = client.bodies()
    assert bodies[-2:] == [frame(1), b""]
    assert set(bodies[:-2]) == {PING}
    assert PING == b": ping\r\n\r\n"  # a comment: EventSource and the SSE parsers skip it


async def test_a_client_that_goes_ends_the_stream_quietly_and_closes_its_frames() -> None:
    client, frames = Client(), Frames()
    frames.queue.put_nowait(frame(1))
    response = stream(frames)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await client.until(lambda: frame(1) in client.bodies())
    client.gone.set()
    async with asyncio.timeout(BOUND_S):
        await task  # returns: a client that left is not an error
    assert frames.closed.is_set(), "the watcher stops following the run (its bus subscription ends)"
    assert client.bodies() == [frame(1)]


async def test_a_stalled_client_is_dropped_after_the_send_timeout() -> None:
    client, frames = Client(), Frames()
    client.stall_after = 1
    for seq in (1, 2):
        frames.queue.put_nowait(frame(seq))
    response = stream(frames, send_timeout_s=0.1)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await client.stalled.wait()
    async with asyncio.timeout(BOUND_S):
        await task  # returns with the response unfinished: uvicorn then closes the connection
    assert client.bodies() == [frame(1)]
    assert frames.closed.is_set()


async def test_a_stalled_ping_drops_an_idle_client_too() -> None:
    client, frames = Client(), Frames()
    client.stall_after = 0
    response = stream(frames, ping_s=0.05, send_timeout_s=0.1)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await client.stalled.wait()  # the first ping's write blocks
    async with asyncio.timeout(BOUND_S):
        await task
    assert client.bodies() == []
    assert frames.closed.is_set()


async def test_a_cancel_from_outside_propagates_and_closes_the_frames() -> None:
    client, frames = Client(), Frames()
    response = stream(frames)
    task = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await client.until(lambda: bool(client.sent))  # the headers are out; it waits for frames
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert frames.closed.is_set()


async def test_head_gets_the_headers_and_no_frames() -> None:
    client, frames = Client(), Frames()
    frames.queue.put_nowait(frame(1))
    response = stream(frames)
    await response({**SCOPE, "method": "HEAD"}, client.receive, client.send)
    assert client.sent[0]["type"] == "http.response.start"
    assert client.bodies() == [b""]


def watchers(bus: EventBus) -> int:
    """The bus's watchers, read from the test's thread while the server's loop runs in its own."""
    while True:
        try:
            return bus.live_watchers()
        except RuntimeError:  # a channel opened or closed while it was being counted
            continue


async def test_a_watcher_that_leaves_a_live_run_releases_its_subscription(tmp_path: Any) -> None:
    with LiveServer(make_settings(tmp_path, sse_ping_s=0.2)) as server:
        bus = server.services.bus
        async with server.client() as client:
            # the model waits 3 s before its first chunk: the stream is idle, and pings keep it open
            body = run_body(team=team(model="fake/t5-f3000", max_messages=2))
            async with client.stream("POST", "/v1/runs/stream", json=body) as response:
                raw = b""
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if raw.count(PING) >= 2:
                        break
                assert b"event: run.queued" in raw and b"id: 1\r\n" in raw
                assert watchers(bus) == 1
            run_id = raw.split(b'"run_id":"', 1)[1].split(b'"', 1)[0].decode()
            async with asyncio.timeout(BOUND_S):
                while watchers(bus):
                    await asyncio.sleep(0.01)
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "running", "the run goes on without its watcher"
            finished = await wait_for_status(client, run_id, {"succeeded", "failed", "cancelled"})
            assert finished["status"] == "succeeded"
