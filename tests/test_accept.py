"""``EagerAcceptor`` (``app/server.py``): on uvloop, a burst of connections is accepted at once, not one
per turn of a busy loop; the server uvicorn runs uses it; running out of descriptors pauses accepting
and loses nothing."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import httpx
import pytest
import uvloop

from app import server as server_module
from app.server import EagerAcceptor
from tests.conftest import LiveServer

BURST = 20


class Seen(asyncio.Protocol):
    """Notes the loop's turn at which each connection was made."""

    turns: list[int]
    clock: list[int]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Seen.turns.append(Seen.clock[0])


async def _accept_burst(eager: bool) -> list[int]:
    """The loop turn at which each of a burst of connections was made, the loop busy every turn."""
    loop = asyncio.get_running_loop()
    Seen.turns, Seen.clock = [], [0]

    def tick() -> None:  # one more every turn: the loop always has something ready
        Seen.clock[0] += 1
        loop.call_soon(tick)

    loop.call_soon(tick)
    server = await loop.create_server(Seen, "127.0.0.1", 0, backlog=128)
    listening: Any = EagerAcceptor.replacing(server, Seen, 128) if eager else server
    port = listening.sockets[0].getsockname()[1]
    # connected on the loop's thread: the kernel completes them all before the loop looks again
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
    try:
        async with asyncio.timeout(10):
            while len(Seen.turns) < BURST:
                await asyncio.sleep(0)
    finally:
        listening.close()
        for client in clients:
            client.close()
    return Seen.turns


def test_uvloop_alone_accepts_one_connection_per_turn() -> None:
    """Why the acceptor exists (libuv 1.45, PR 3696): the burst takes a turn per connection."""
    turns = uvloop.run(_accept_burst(eager=False))
    assert len(set(turns)) == BURST


def test_the_acceptor_takes_a_whole_burst_at_once() -> None:
    turns = uvloop.run(_accept_burst(eager=True))
    assert max(turns) - min(turns) <= 2  # accepted in one turn; made as their tasks first run


def test_out_of_descriptors_pauses_accepting_then_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "ACCEPT_RETRY_S", 0.01)

    class Exhausted(socket.socket):
        failures = 1

        def accept(self) -> tuple[socket.socket, Any]:
            if Exhausted.failures:
                Exhausted.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return super().accept()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        Seen.turns, Seen.clock = [], [0]
        sock = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        acceptor = EagerAcceptor(loop, sock, Seen, 16)
        client = socket.create_connection(sock.getsockname())
        try:
            async with asyncio.timeout(10):
                while not Seen.turns:
                    await asyncio.sleep(0.01)
        finally:
            acceptor.close()
            client.close()
        assert acceptor.sockets == ()
        return len(Seen.turns)

    assert uvloop.run(main()) == 1  # the connection waited in the backlog, and was served


async def test_the_server_accepts_eagerly_and_serves_a_burst(live_server: LiveServer) -> None:
    # uvicorn's default loop is uvloop: its listening socket is now an acceptor's
    servers: list[object] = list(live_server.server.servers)
    assert [type(s) for s in servers] == [EagerAcceptor]
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        answers = await asyncio.gather(*(client.get("/healthz") for _ in range(30)))
    assert [a.status_code for a in answers] == [200] * 30
