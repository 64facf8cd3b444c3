"""uvicorn, with two additions.

- When it starts to stop, live streams are closed with a final event. Plain
  uvicorn waits for open responses (an SSE stream of a long run never ends by
  itself) and then kills them mid-frame. Draining the event bus first lets
  every stream end with ``stream.closing`` and its last seq, so clients resume
  cleanly, here after a restart or on another replica.
- On uvloop, new connections are accepted all at once. libuv accepts one
  connection each time its loop goes round (since libuv 1.45, PR 3696), so
  when a burst of clients connects while the loop is busy (fifty runs
  starting), the last of them waited fifty turns to be accepted, each turn as
  long as every callback then ready: 50-85 ms before their request was even
  read (docs/performance.md, section 19). ``EagerAcceptor`` takes over each
  TCP listening socket uvicorn made and, whenever it is readable, accepts
  every pending connection (up to the backlog), as asyncio's own loop does,
  handing each to the loop with ``connect_accepted_socket`` and uvicorn's own
  protocol. What it touches of uvicorn's internals is in ``app/patches/uvicorn_servers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Generator
from typing import cast

import structlog
import uvicorn
from sse_starlette.sse import AppStatus

from app.api.services import Services
from app.patches.uvicorn_servers import protocol_factory, replace_servers

log = structlog.get_logger(__name__)

ACCEPT_RETRY_S = 1.0  # out of file descriptors (or memory): accepting pauses this long, as in asyncio
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class EagerAcceptor:
    """A listening socket whose pending connections are all accepted when it is readable.

    It stands in for the loop's server object in ``uvicorn.Server.servers``: ``close`` stops accepting
    and closes the socket (connections already accepted stay open), ``wait_closed`` returns at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._backlog = backlog
        self._connecting: set[asyncio.Task[object]] = set()
        self._closed = False
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    @classmethod
    def replacing(
        cls, server: asyncio.AbstractServer, protocol_factory: Callable[[], asyncio.Protocol], backlog: int
    ) -> EagerAcceptor:
        """Take over ``server``'s one TCP listening socket: the socket stays open and listening (a
        duplicate of its descriptor), and ``server`` is closed."""
        loop = asyncio.get_running_loop()
        (listening,) = server.sockets  # type: ignore[attr-defined]
        sock = socket.socket(listening.family, listening.type, fileno=os.dup(listening.fileno()))
        server.close()
        return cls(loop, sock, protocol_factory, backlog)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else (self._sock,)

    def _accept(self) -> None:
        for _ in range(self._backlog):
            try:
                conn, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none pending
            except ConnectionAbortedError:
                continue  # the client gave up before it was accepted
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error("accept_paused", error=os.strerror(exc.errno), retry_s=ACCEPT_RETRY_S)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_S, self._resume)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except Exception as exc:  # the connection is lost, not the server
            conn.close()
            log.warning("connection_not_served", error=repr(exc))

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    async def wait_closed(self) -> None:
        return None


class SwarmServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, before_exit: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        # our drain ends streams with an explicit event; sse-starlette's own would cut them silently
        AppStatus.enable_automatic_graceful_drain = False
        self._before_exit = before_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a captured SIGTERM once it has shut down, which ends the process at once:
        # what must happen before the process goes (stopping its sibling processes) happens here
        with super().capture_signals():
            try:
                yield
            finally:
                if self._before_exit is not None:
                    self._before_exit()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        loop = asyncio.get_running_loop()
        config = self.config
        if not self.started or config.ssl or not type(loop).__module__.startswith("uvloop"):
            return  # asyncio's own loop accepts every pending connection already
        create_protocol = protocol_factory(self)

        def eager(server: asyncio.AbstractServer) -> asyncio.AbstractServer:
            # uvicorn only closes its servers and waits for them: the acceptor does both
            if not _tcp(server):
                return server
            return cast(asyncio.AbstractServer, EagerAcceptor.replacing(server, create_protocol, config.backlog))

        replace_servers(self, eager)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        services = _find_services(app)
        if services is not None:
            services.bus.drain()
        await super().shutdown(sockets)


def _tcp(server: asyncio.AbstractServer) -> bool:
    listening: tuple[socket.socket, ...] = tuple(getattr(server, "sockets", None) or ())
    return len(listening) == 1 and listening[0].family in (socket.AF_INET, socket.AF_INET6)


def _find_services(app: object) -> Services | None:
    # uvicorn wraps the app in middleware; walk down to the FastAPI instance
    for _ in range(10):
        if app is None:
            return None
        state = getattr(app, "state", None)
        services = getattr(state, "services", None) if state is not None else None
        if isinstance(services, Services):
            return services
        app = getattr(app, "app", None)
    return None
