"""The load client: starts SwarmDirector runs with ``POST /v1/runs/stream`` and times every SSE event.

A separate process so its CPU is not the server's, and as cheap as a
client can be: raw asyncio sockets (uvloop when installed), HTTP/1.1 with
chunked decoding and an SSE splitter, and no JSON parsing except of the
terminal event. httpx would spend more CPU per event than the server's
own SSE encoding on this two-core machine; the orchestrator records this
process's CPU seconds beside every figure so it can be checked that the
client was never the limit.

A token is one ``message.delta`` event, timestamped when the bytes that
complete it are read. One connection per run (like ``EventSource``).

Run by bench/run.py as a worker: ``load.py --port P`` reads one batch per
stdin line (see workloads.worker_loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from workloads import Batch, Timeline, run_rounds, team_spec, worker_loop

TERMINAL = {b"run.completed", b"run.failed", b"run.cancelled"}
DELTA = b"message.delta"


class Dechunker:
    """Decodes an HTTP/1.1 ``Transfer-Encoding: chunked`` body fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0  # body bytes left in the current chunk
        self.crlf = False  # the CRLF after a chunk's body is still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out: list[bytes] = []
        while not self.done:
            if self.remaining:
                take = self.buf[: self.remaining]
                out.append(take)
                self.remaining -= len(take)
                self.buf = self.buf[len(take) :]
                if self.remaining:
                    break
                self.crlf = True
            if self.crlf:
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.crlf = False
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            size = int(self.buf[:end].split(b";", 1)[0], 16)
            self.buf = self.buf[end + 2 :]
            if size == 0:
                self.done = True
            self.remaining = size
        return b"".join(out)


async def stream_run(
    host: str,
    port: int,
    body: bytes,
    timeline: Timeline,
    clock: Callable[[], float],
    *,
    path: bytes = b"/v1/runs/stream",
) -> None:
    """POST the run and read its SSE stream to the terminal event, filling ``timeline``."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async for now, frames in sse_frames(reader, writer, host, port, path, body, timeline, clock):
            for frame in frames:
                kind = b""
                payload = b""
                for line in frame.split(b"\n"):
                    if line.startswith(b"event:"):
                        kind = line[6:].strip()
                    elif line.startswith(b"data:"):
                        payload = line[5:].strip()
                if not kind and not payload:
                    continue  # a ": ping" comment
                if timeline.first_event is None:
                    timeline.first_event = now
                if kind == DELTA:
                    timeline.tokens.append(now)
                elif kind in TERMINAL:
                    timeline.finished = now
                    event = json.loads(payload)
                    timeline.status = event["data"].get("status", kind.decode())
                    if timeline.status != "succeeded":
                        timeline.error = json.dumps(event["data"].get("error"))
                    return
    finally:
        writer.close()


async def sse_frames(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    path: bytes,
    body: bytes,
    timeline: Timeline,
    clock: Callable[[], float],
    headers: bytes = b"",
) -> AsyncIterator[tuple[float, list[bytes]]]:
    """POST ``body`` to ``path`` and yield the SSE frames of each read with its time, until the stream
    ends; a refusal or a cut stream is written into ``timeline``."""
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n%s"
        b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (path, host.encode(), port, headers, len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    if code != 200:
        timeline.status, timeline.error = f"http_{code}", (await reader.read(2000)).decode(errors="replace")
        return
    dechunker = Dechunker() if chunked else None
    pending = b""
    while True:
        data = await reader.read(262_144)
        now = clock()
        if not data:
            timeline.status, timeline.error = "cut", "the stream ended before a terminal event"
            return
        if dechunker is not None:
            data = dechunker.feed(data)
        pending = (pending + data).replace(b"\r\n", b"\n")
        *frames, pending = pending.split(b"\n\n")
        yield now, frames


# -- W6 (issue 22): the same run through a protocol view ------------------------------------------
# A token is one frame of the dialect's delta, found by a byte search of its data line, no JSON:
# Chat Completions streams every message.delta as one ``reasoning_content`` chunk (the answer comes
# once more, whole, as ``content`` at the end, and is not a token); AG-UI as one TEXT_MESSAGE_CONTENT.
CHAT_TOKEN = b'"reasoning_content"'
AGUI_TOKEN = b'"type":"TEXT_MESSAGE_CONTENT"'


def chat_frame(payload: bytes, timeline: Timeline, now: float) -> bool:
    """One Chat Completions frame into ``timeline``; True once the stream is over (``[DONE]``)."""
    if CHAT_TOKEN in payload:
        timeline.tokens.append(now)
    elif payload == b"[DONE]":
        timeline.finished = now
        if timeline.error is None:
            timeline.status = "succeeded" if timeline.status == "stop" else "no_finish_reason"
        return True
    elif payload.startswith(b'{"error"'):
        timeline.status, timeline.error = "failed", payload.decode(errors="replace")
    elif b'"finish_reason":"stop"' in payload:
        timeline.status = "stop"
    return False


def agui_frame(payload: bytes, timeline: Timeline, now: float) -> bool:
    """One AG-UI frame into ``timeline``; True at ``RUN_FINISHED`` or ``RUN_ERROR``."""
    if AGUI_TOKEN in payload:
        timeline.tokens.append(now)
    elif b'"type":"RUN_FINISHED"' in payload or b'"type":"RUN_ERROR"' in payload:
        timeline.finished = now
        event = json.loads(payload)
        outcome = (event.get("outcome") or {}).get("type") if event["type"] == "RUN_FINISHED" else "error"
        timeline.status = "succeeded" if outcome == "success" else f"outcome_{outcome}"
        if outcome != "success":
            timeline.error = payload.decode(errors="replace")
        return True
    return False


DIALECTS: dict[str, tuple[Callable[[bytes, Timeline, float], bool], bytes]] = {
    "chat": (chat_frame, b"Authorization: Bearer bench\r\n"),  # an open server takes any key on /openai/v1
    "agui": (agui_frame, b""),
}


def dialect_request(dialect: str, team: str) -> tuple[bytes, bytes]:
    """The path and body of one run of the stored ``team`` in ``dialect`` (a new AG-UI thread each)."""
    if dialect == "chat":
        body = {"model": team, "messages": [{"role": "user", "content": "go"}], "stream": True}
        return b"/openai/v1/chat/completions", json.dumps(body).encode()
    if dialect == "agui":
        ids = uuid.uuid4().hex
        body = {"threadId": f"w6-{ids}", "runId": ids, "messages": [{"id": "m1", "role": "user", "content": "go"}]}
        return f"/agui/teams/{team}".encode(), json.dumps(body).encode()
    if dialect == "sse":
        return b"/v1/runs/stream", json.dumps({"task": "go", "team_id": team}).encode()
    raise ValueError(f"unknown dialect {dialect!r}")


async def stream_dialect(
    host: str, port: int, dialect: str, team: str, timeline: Timeline, clock: Callable[[], float]
) -> None:
    """One run of the stored ``team`` through a protocol view, read to its end, filling ``timeline``."""
    path, body = dialect_request(dialect, team)
    if dialect == "sse":
        await stream_run(host, port, body, timeline, clock, path=path)
        return
    on_frame, headers = DIALECTS[dialect]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async for now, frames in sse_frames(reader, writer, host, port, path, body, timeline, clock, headers):
            for frame in frames:
                if not frame.startswith(b"data:"):
                    continue  # a ": ping" comment
                if timeline.first_event is None:
                    timeline.first_event = now
                if on_frame(frame[5:].strip(), timeline, now):
                    return
    finally:
        writer.close()


async def run_batch(host: str, port: int, batch: Batch) -> list[Timeline]:
    body = json.dumps({"task": "go", "team": team_spec(batch.model, batch.replies)}).encode()
    clock = time.perf_counter

    async def one(start: float) -> Timeline:
        timeline = Timeline(t0=clock())
        try:
            async with asyncio.timeout(batch.timeout_s):
                if batch.team:
                    await stream_dialect(host, port, batch.dialect, batch.team, timeline, clock)
                else:
                    await stream_run(host, port, body, timeline, clock)
        except TimeoutError:
            timeline.status, timeline.error = "timeout", f"no terminal event within {batch.timeout_s:g} s"
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            timeline.status, timeline.error = "client_error", f"{type(exc).__name__}: {exc}"
        return timeline.relative_to(start)

    return await run_rounds(batch, one, clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    worker_loop(lambda batch: run_batch(args.host, args.port, batch), loop_factory=factory)


if __name__ == "__main__":
    main()
