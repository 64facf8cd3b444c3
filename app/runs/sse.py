"""Runs' event streams as Server-Sent Events (sse-starlette).

Frames carry ``id: <seq>`` and ``event: <type>``, so a browser's
``EventSource`` resumes by itself with ``Last-Event-ID``. ``: ping`` comments
keep idle streams open; a client that stops reading is dropped after the send
timeout, and its run goes on. Events that queue up for a watcher are written
together, one write per batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.core.services import Services
from app.runtime.envelope import Envelope
from app.runtime.streams import StreamClosing, StreamLagged, follow_batches

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _frames(
    services: Services, run_id: str, after: int, known: list[Envelope] | None = None
) -> AsyncIterator[ServerSentEvent | bytes]:
    async for item in follow_batches(
        services.read_sessionmaker, services.bus, run_id, after, remote=services.streams, known=known
    ):
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
                data=orjson.dumps({"run_id": run_id, "last_seq": item.last_seq, "reason": "shutdown"}).decode(),
                event="stream.closing",
                retry=1000,
            )


def event_stream(
    services: Services,
    run_id: str,
    after: int,
    headers: dict[str, str] | None = None,
    *,
    known: list[Envelope] | None = None,
) -> EventSourceResponse:
    """The run's events after ``after`` as SSE; ``known``: its first events, already in hand."""
    settings = services.settings
    return EventSourceResponse(
        _frames(services, run_id, after, known),
        ping=settings.sse_ping_s,
        send_timeout=settings.sse_send_timeout_s,
        headers={**SSE_HEADERS, **(headers or {})},
    )


def parse_last_event_id(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        seq = int(value.strip())
    except ValueError:
        return None
    return seq if seq >= 0 else None


async def wait_terminal(services: Services, run_id: str) -> None:
    """Until the run's terminal event is out (and, for a run of this process, its task has ended)."""
    if services.runs.is_live(run_id) or services.cluster is None:
        await services.bus.wait_terminal(run_id)
        await services.runs.wait(run_id)
        return
    # executed elsewhere (or not yet claimed): follow its stream to the end
    async for item in follow_batches(services.read_sessionmaker, services.bus, run_id, 1, remote=services.streams):
        if isinstance(item, StreamClosing) or (isinstance(item, list) and item[-1].terminal):
            return
