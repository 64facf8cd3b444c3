"""A client that stops reading is disconnected after the send timeout: its connection is closed on the
server's side, with what was queued for it dropped, not left open holding that queue.

The clients are raw sockets with a tiny receive buffer that send a request and then read nothing, on
a real uvicorn whose connections have a small send buffer, so the server's writes really block.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import Settings
from tests.conftest import LiveServer, make_settings
from tests.fixtures.specs import run_body, team

pytestmark = pytest.mark.e2e

SEND_TIMEOUT_S = 0.5
CLOSED_WITHIN_S = 10  # a bound for a loaded machine; the close comes about SEND_TIMEOUT_S after the stall


class SmallBufferServer(LiveServer):
    """Connections inherit a small, fixed send buffer from the listening socket (Linux would otherwise
    grow it to megabytes for a reader that never reads)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)

    def open_connections(self) -> set[int]:
        """The client ports of the connections uvicorn still holds."""
        ports = set()
        for protocol in list(self.server.server_state.connections):
            client = getattr(protocol, "client", None)
            if client:
                ports.add(client[1])
        return ports


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        # ours are structlog's event dicts; the libraries' (uvicorn's) are plain messages
        self.events.append(record.msg if isinstance(record.msg, dict) else {"event": record.getMessage()})


@contextmanager
def recording() -> Iterator[Records]:
    """The log's events from here on (after the app is made: it sets the root logger's handlers)."""
    handler = Records()
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def stalled_client(port: int, request: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def drain(sock: socket.socket, within: float) -> bytes:
    """Read until the server's end of the stream (EOF, or a reset)."""
    sock.settimeout(within)
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data.extend(chunk)


async def closed_by_server(server: SmallBufferServer, port: int) -> float:
    """Seconds until uvicorn no longer holds the connection from client ``port``."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(CLOSED_WITHIN_S):
        while port in server.open_connections():
            await asyncio.sleep(0.02)
    return loop.time() - began


async def test_a_stalled_sse_client_is_disconnected_and_its_queue_dropped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sse_send_timeout_s=SEND_TIMEOUT_S, sse_ping_s=SEND_TIMEOUT_S)
    with SmallBufferServer(settings) as server, recording() as records:
        async with server.client() as client:
            # a finished run of a few thousand events: its replay is far more than the buffers hold
            r = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t400", max_messages=6)))
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            run = r.json()
            head = f"Host: 127.0.0.1:{server.port}\r\nAccept: text/event-stream\r\n\r\n"
            request = f"GET /v1/runs/{run['id']}/events HTTP/1.1\r\n{head}"
            sock = stalled_client(server.port, request.encode())
            try:
                port = sock.getsockname()[1]
                async with asyncio.timeout(CLOSED_WITHIN_S):
                    while port not in server.open_connections():
                        await asyncio.sleep(0.01)
                await closed_by_server(server, port)
                stalled = [e for e in records.events if e["event"] == "sse_client_stalled"]
                assert len(stalled) == 1 and stalled[0]["closed"] is True, records.events
                assert not [e for e in records.events if "ASGI" in e["event"]], "uvicorn saw a clean disconnect"
                raw = await asyncio.to_thread(drain, sock, CLOSED_WITHIN_S)
            finally:
                sock.close()
            assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
            assert raw.count(b"\nid: ") < run["last_seq"], "cut off before the end of the replay"
            # the server goes on serving, the run's whole log included
            page = await client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
            assert page.status_code == 200


def websocket_text(payload: bytes) -> bytes:
    """One masked text frame, as a client sends it."""
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_websocket(port: int, run_id: str) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock = stalled_client(port, handshake.encode())
    sock.settimeout(10)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: nothing past the handshake is read
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(websocket_text(f'{{"type": "subscribe", "run_id": "{run_id}", "after": 0}}'.encode()))
    return sock


async def test_a_stalled_websocket_client_is_disconnected(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sse_send_timeout_s=SEND_TIMEOUT_S)
    with SmallBufferServer(settings) as server, recording() as records:
        async with server.client() as client:
            r = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t400", max_messages=6)))
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            sock = await asyncio.to_thread(stalled_websocket, server.port, r.json()["id"])
            try:
                port = sock.getsockname()[1]
                began = time.monotonic()
                await closed_by_server(server, port)
                stalled = [e for e in records.events if e["event"] == "ws_client_stalled"]
                assert len(stalled) == 1 and stalled[0]["closed"] is True, records.events
                await asyncio.to_thread(drain, sock, CLOSED_WITHIN_S)
                assert time.monotonic() - began < CLOSED_WITHIN_S
            finally:
                sock.close()
            # the server goes on serving
            assert (await client.get(f"/v1/runs/{r.json()['id']}")).status_code == 200
