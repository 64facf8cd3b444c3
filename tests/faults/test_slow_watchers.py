"""A watcher that never reads is cut loose without slowing the run or 50 healthy watchers; it can resume.

The stalled watcher is a raw socket with a tiny receive buffer that sends its request and then
reads nothing, so the server's writes to it really block (the kernel buffers fill up). The bus
then cuts it loose (its bounded buffer overflows) and the SSE send timeout drops the connection.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import LiveServer, make_settings
from tests.fixtures.specs import run_body, team
from tests.fixtures.sse import read_events, sse_frames

pytestmark = pytest.mark.e2e

SEND_TIMEOUT_S = 1.5
# 2 replies x 600 tokens at 4 ms: the run outlasts the send timeout three times over, however fast the server
TOKEN_DELAY_MS = 4


class SmallBufferServer(LiveServer):
    """A live server whose connections keep a small kernel send buffer.

    Linux grows a socket's send buffer up to 4 MB for a reader that never reads; connections
    inherit a fixed size from the listening socket instead, so that a few hundred KB of events
    are enough to make writes to a stalled watcher block.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)


def open_stalled_watcher(port: int, run_id: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    request = f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def read_to_eof(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    data = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data.extend(chunk)


def seqs_in(raw: bytes) -> list[int]:
    """The ids of the complete SSE frames in a raw (chunked) response: a frame is complete once the
    blank line after it came (a stalled client's connection is cut anywhere, mid-frame too)."""
    text = raw.decode("utf-8", "replace")
    complete = text[: text.rfind("\r\n\r\n")] if "\r\n\r\n" in text else ""
    return [int(line[4:]) for line in complete.splitlines() if line.startswith("id: ")]


async def healthy_watcher(client: httpx.AsyncClient, run_id: str) -> tuple[list[int], float]:
    seqs: list[int] = []
    gaps: list[float] = []
    last: tuple[str, float] | None = None
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
        async for frame in sse_frames(response):
            now = time.monotonic()
            if "id" not in frame:
                assert frame["event"] == "stream.lagged", frame
                continue
            envelope = json.loads(frame["data"])
            assert envelope["seq"] == int(frame["id"]) and envelope["type"] == frame["event"]
            seqs.append(envelope["seq"])
            if envelope["type"] == "message.delta":
                message = envelope["data"]["message_id"]
                if last is not None and last[0] == message:
                    gaps.append(now - last[1])
                last = (message, now)
    return seqs, max(gaps, default=0.0)


async def test_a_stalled_watcher_is_cut_loose_and_fifty_healthy_ones_keep_the_models_pace(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, watcher_buffer=16, sse_send_timeout_s=SEND_TIMEOUT_S)
    with SmallBufferServer(settings) as server:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            model = f"fake/t600-d{TOKEN_DELAY_MS}"
            r = await client.post("/v1/runs", json=run_body(team=team(model=model, max_messages=3)))
            assert r.status_code == 202, r.text
            run = r.json()
            stalled = open_stalled_watcher(server.port, run["id"])
            healthy = await asyncio.gather(*(healthy_watcher(client, run["id"]) for _ in range(50)))
            final = (await client.get(f"/v1/runs/{run['id']}")).json()
            # the run finished, with every watcher served, while the stalled one had not read a byte
            assert final["status"] == "succeeded"
            n = final["last_seq"]
            for seqs, _ in healthy:
                assert seqs == list(range(1, n + 1))
            max_gap = max(gap for _, gap in healthy)
            # a watcher that held the run up would show here as a pause of the send timeout
            assert max_gap < SEND_TIMEOUT_S * 0.8, f"healthy watchers' largest gap: {max_gap:.3f}s"

            raw = await asyncio.to_thread(read_to_eof, stalled, 30)
            stalled.close()
            got = seqs_in(raw)
            assert got == list(range(1, len(got) + 1)), "what it got is in order, without a gap"
            assert len(got) < n, "it was cut loose before the end, not served in full"
            rest = [e["seq"] async for e in _events(client, run["id"], {"last-event-id": str(got[-1] if got else 0)})]
            assert got + rest == list(range(1, n + 1)), "and it resumes where it was cut"
            print(f"events={n} stalled_got={len(got)} healthy_max_gap={max_gap * 1000:.1f}ms")


async def _events(client: httpx.AsyncClient, run_id: str, headers: dict[str, str]) -> Any:
    async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        async for event in read_events(response):
            if "seq" in event:
                yield event
