"""Recorded provider answers (``transcripts/``), and a loopback server that replays them byte for byte.

Each transcript is a response body exactly as a provider sends it (``<stem>.sse``) and what a model
client must make of it (``<stem>.json``: its source, status, headers and ``expected``); the
README beside them lists each one's source. The server answers ``POST /v1/chat/completions`` with
the transcript named by the request's ``model``, cut into pieces at seeded random places and at the
places a reader most often gets wrong (between CR and LF, inside a UTF-8 character, inside
``data:``), each piece sent as an HTTP chunk of its own. A request that carries a tool's result
(the team's next call, after the transcript's tool calls) gets a short closing answer instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TRANSCRIPTS = Path(__file__).parent / "transcripts"
CLOSING_TEXT = "All done."
CLOSING_USAGE = {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}


@dataclass(frozen=True)
class Transcript:
    stem: str
    body: bytes
    status: int
    headers: dict[str, str]
    tools: tuple[str, ...]
    expected: dict[str, Any]
    source: str

    @property
    def fails(self) -> bool:
        return "error" in self.expected

    @property
    def streams(self) -> bool:
        """Whether it answers with an event stream (text or reasoning pieces a client streams)."""
        return self.status == 200 and "event-stream" in self.headers.get("content-type", "")


@cache
def transcripts() -> dict[str, Transcript]:
    found: dict[str, Transcript] = {}
    for meta in sorted(TRANSCRIPTS.glob("*.json")):
        spec = json.loads(meta.read_text("utf-8"))
        found[meta.stem] = Transcript(
            stem=meta.stem,
            body=meta.with_suffix(".sse").read_bytes(),
            status=int(spec.get("status", 200)),
            headers={k.lower(): str(v) for k, v in spec.get("headers", {}).items()},
            tools=tuple(spec.get("tools", ())),
            expected=spec["expected"],
            source=spec["source"],
        )
    return found


def cut_points(body: bytes, seed: int) -> list[int]:
    """Where to cut ``body``: seeded random places, and the hard ones (CR|LF, inside a UTF-8
    character, inside a ``data:`` field name)."""
    rng = random.Random(seed)
    points = {rng.randrange(1, len(body)) for _ in range(len(body) // 40)} if len(body) > 1 else set()
    hard = [i + 1 for i in range(len(body) - 1) if body[i : i + 2] == b"\r\n"]
    hard += [i + 1 for i, b in enumerate(body[:-1]) if b >= 0xC0]  # after a UTF-8 lead byte
    start = body.find(b"data:")
    while start != -1:
        hard.append(start + 2)
        start = body.find(b"data:", start + 1)
    points |= set(rng.sample(hard, min(len(hard), 12)))
    return sorted(p for p in points if 0 < p < len(body))


def pieces(body: bytes, seed: int) -> list[bytes]:
    bounds = [0, *cut_points(body, seed), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def closing_stream() -> bytes:
    """The answer to a call that carries a tool's result: a plain OpenAI stream with usage."""
    base = {"id": "chatcmpl-closing", "object": "chat.completion.chunk", "created": 0, "model": "replay"}
    events = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": CLOSING_TEXT}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": CLOSING_USAGE},
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


@dataclass
class ReplayServer:
    """Replays transcripts on a loopback port; ``requests`` holds every request body it was sent, and
    ``heads`` each one's target and headers. ``serve``: always this transcript, whatever the model."""

    seed: int = 0
    serve: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    heads: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReplayServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = json.loads(body or b"{}")
                self.requests.append(request)
                self.heads.append((lines[0].split(" ")[1], headers))
                await self._answer(request, writer)
        writer.close()

    async def _answer(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        messages = request.get("messages") or [{}]
        if messages[-1].get("role") == "tool":
            status, headers, body = 200, {"content-type": "text/event-stream"}, closing_stream()
        else:
            found = transcripts().get(self.serve or str(request.get("model")))
            if found is None:
                status, headers, body = 404, {"content-type": "application/json"}, b'{"error": {"message": "no such"}}'
            else:
                status, headers, body = found.status, found.headers, found.body
        head = f"HTTP/1.1 {status} Replay\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write((head + "transfer-encoding: chunked\r\n\r\n").encode("latin-1"))
        for piece in pieces(body, self.seed) if body else []:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0)  # a turn of the loop between pieces, so that they tend to arrive apart
        writer.write(b"0\r\n\r\n")
        await writer.drain()
