"""Runs' event streams as Server-Sent Events (sse-starlette).

Frames carry ``id: <seq>`` and ``event: <type>``, so a browser's
``EventSource`` resumes by itself with ``Last-Event-ID``. ``: ping`` comments
keep idle streams open; a client that stops reading is dropped after the send
timeout, and its run goes on. Events that queue up for a watcher are written
together, one write per batch.

``EventStream`` is sse-starlette's ``EventSourceResponse`` (its headers, its
options, its frame encoding) with a leaner way of driving the stream. The
library's own ``__call__`` runs a task group of four tasks per stream (the
frames, pings, the client's disconnect, the server's exit) and enters a cancel
scope with a timer around every write: about a tenth of the server's CPU for a
run's start when fifty start at once (docs/performance.md, section 18). Here
the request's task writes the frames; one small task waits for the client's
disconnect; one timer per stream, every quarter of the shorter of the ping
interval and the send timeout, sends a ping when nothing was written for the
ping interval (from a task made only then) and drops a client whose write has
been stuck for the send timeout: its connection is aborted, what was queued
for it dropped (``abort_connection``), where uvicorn alone would keep it open
until the client read it all. The server's exit needs nothing of its own:
the bus's drain ends every stream with ``stream.closing`` (``app/server.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Annotated, Literal

import orjson
import structlog
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from app.api.services import Services
from app.core.envelope import Envelope
from app.core.errors import BadRequest
from app.patches.uvicorn_servers import abort_connection
from app.runtime.streams import StreamClosing, StreamLagged

log = structlog.get_logger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SEP = "\r\n"
PING = ServerSentEvent(comment="ping", sep=SEP).encode()
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


async def _frames(
    services: Services, run_id: str, after: int, known: list[Envelope] | None = None
) -> AsyncGenerator[ServerSentEvent | bytes, None]:
    async for item in services.follow(run_id, after, known):
        if isinstance(item, list):
            # whatever queued up for this watcher goes out as one write; each frame is encoded once
            # per event, however many watchers it has
            yield b"".join(env.sse() for env in item)
        elif isinstance(item, StreamLagged):
            # no id: the client's Last-Event-ID stays on the last event it really got
            yield ServerSentEvent(
                data=orjson.dumps({"run_id": run_id, "last_seq": item.last_seq}).decode(),
                event="stream.lagged",
            )
        elif isinstance(item, StreamClosing):
            yield ServerSentEvent(
                data=orjson.dumps({"run_id": run_id, "last_seq": item.last_seq, "reason": item.reason}).decode(),
                event="stream.closing",
                retry=1000,
            )


class EventStream(EventSourceResponse):
    """``EventSourceResponse`` driven by the request's task, one disconnect watcher and one timer."""

    body_iterator: AsyncGenerator[ServerSentEvent | bytes, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD" or not self.ping_interval or not self.send_timeout:
            await super().__call__(scope, receive, send)  # not what our routes make: the library's way
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        writer = _Writer(send, self.ping_interval, self.send_timeout)
        listener = asyncio.ensure_future(writer.listen(receive))
        try:
            async for item in self.body_iterator:
                await writer.write(item if isinstance(item, bytes) else item.encode())
            writer.finished = True
            await send(_END)
        except asyncio.CancelledError:
            if writer.ended is None or writer.task.uncancel() > 0:
                raise  # cancelled by someone else: the server is stopping
            if writer.ended == "stalled":
                # uvicorn would close the connection only once the client had read what is queued for
                # it: abort it, dropping that (the client resumes with its Last-Event-ID)
                closed = abort_connection(writer.task)
                log.warning(
                    "sse_client_stalled", send_timeout_s=self.send_timeout, path=scope.get("path"), closed=closed
                )
                await asyncio.sleep(0)  # uvicorn learns of the lost connection before the app returns
        finally:
            writer.stop()
            listener.cancel()
            await self.body_iterator.aclose()


class _Writer:
    """The writes of one stream, its pings and its watchdog; ``ended`` says why it stopped early."""

    def __init__(self, send: Send, ping_s: float, send_timeout_s: float) -> None:
        self.send = send
        self.ping_s = ping_s
        self.send_timeout_s = send_timeout_s
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.loop = asyncio.get_running_loop()
        self.ended: Literal["disconnected", "stalled"] | None = None
        self.finished = False  # the last frame is out: a disconnect now changes nothing
        self.last_write = self.loop.time()
        self.writing = 0  # writes under way (a ping's and a frame's may wait together for a slow client)
        self.writing_since = 0.0  # when the oldest of them began
        self.pinger: asyncio.Task[None] | None = None
        self.tick_s = min(ping_s, send_timeout_s) / 4
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(self.tick_s, self._tick)

    async def write(self, chunk: bytes) -> None:
        if not self.writing:
            self.writing_since = self.loop.time()
        self.writing += 1
        try:
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self.writing -= 1
        self.last_write = self.loop.time()

    async def listen(self, receive: Receive) -> None:
        """Until the client goes: then the stream stops following the run (the run goes on)."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self._end("disconnected")

    def _end(self, why: Literal["disconnected", "stalled"]) -> None:
        # a client that goes after the last frame changes nothing; one stalled on the end is still dropped
        if self.ended is None and (why == "stalled" or not self.finished):
            self.ended = why
            self.task.cancel()

    def _tick(self) -> None:
        now = self.loop.time()
        if self.writing and now - self.writing_since >= self.send_timeout_s:
            self._end("stalled")
            return
        if not self.writing and self.pinger is None and now - self.last_write >= self.ping_s:
            self.pinger = self.loop.create_task(self._ping())
        self.timer = self.loop.call_later(self.tick_s, self._tick)

    async def _ping(self) -> None:
        try:
            with contextlib.suppress(Exception):  # the frames' own writes meet the same error and end the stream
                await self.write(PING)
        finally:
            self.pinger = None

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pinger is not None:
            self.pinger.cancel()


def event_stream(
    services: Services,
    run_id: str,
    after: int,
    headers: dict[str, str] | None = None,
    *,
    known: list[Envelope] | None = None,
) -> EventStream:
    """The run's events after ``after`` as SSE; ``known``: its first events, already in hand."""
    settings = services.settings
    return EventStream(
        _frames(services, run_id, after, known),
        ping=settings.sse_ping_s,
        sep=SEP,
        send_timeout=settings.sse_send_timeout_s,
        headers={**SSE_HEADERS, **(headers or {})},
    )


# the greatest seq a request may name: seqs are 32-bit integers in PostgreSQL, and no run comes near it
MAX_SEQ = 2**31 - 1
_SEQ: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=0, le=MAX_SEQ)])
_OUT_OF_RANGE = ("greater_than_equal", "less_than_equal", "int_parsing_size")


def parse_last_event_id(value: str | None) -> int | None:
    """The seq a client resumes after, read as ``?after=`` is; ``None`` when it sent no (or an empty) id.

    Every ``id:`` this server sends is a seq, so a value that is no integer never came from it: a 400,
    where taking it as 0 would replay the whole run. An integer out of range is a 422, as for ``after``.
    """
    if value is None or not value.strip():
        return None
    try:
        return _SEQ.validate_python(value.strip())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        if all(e["type"] in _OUT_OF_RANGE for e in errors):
            raise RequestValidationError([{**e, "loc": ("header", "last-event-id")} for e in errors]) from None
        raise BadRequest(
            "`Last-Event-ID` is the seq of the last event received (an integer).", code="invalid_last_event_id"
        ) from None
