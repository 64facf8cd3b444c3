"""uvicorn's listening servers, for ``EagerAcceptor`` (``app/server.py``) to take over; and the
connection under a request, for a stalled stream to drop.

Written for uvicorn 0.54.0 (internals used: ``Server.servers``, what ``Server.startup`` gives each
connection's protocol, and the object whose ``run_asgi`` is a request's task: an HTTP request's
``RequestResponseCycle``, a WebSocket's protocol, each with its connection's ``transport``).
``SWARM_PATCHES_OFF=uvicorn_servers`` leaves uvicorn's servers as they are, to measure it;
``abort_connection`` is not switched.

On uvloop, libuv accepts one connection each time its loop goes round (since libuv 1.45), so a
burst of clients that connected while the loop was busy waited a turn each before their requests
were read. ``EagerAcceptor`` accepts every pending connection whenever the socket is readable, as
asyncio's own loop does. To do so it stands in for the loop's server object in ``Server.servers``,
the list uvicorn's ``startup`` fills and its ``shutdown`` closes and waits for (nothing else reads
it), and it gives each connection the protocol uvicorn's ``startup`` would. The first tokens of a
burst of 50 runs then come within a few milliseconds of each other (docs/performance.md, section
19). Measured off against on (section 21, W2 N=50): with it, the last first token came at most 5.8
ms after the median one in all 15 batches; without it, 4 batches of 12 had a late group 50-160 ms
behind, and the worst p99 was 530 ms against 340. ``tests/test_accept.py`` holds it: uvloop
alone takes a turn per connection, the acceptor one turn for a burst, and a real ``SwarmServer``
serves a burst through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import uvicorn

from app.patches import is_off


def protocol_factory(server: uvicorn.Server) -> Callable[[], asyncio.Protocol]:
    """What uvicorn's ``startup`` hands its loop servers: a new HTTP protocol for each connection."""
    config = server.config

    def create_protocol() -> asyncio.Protocol:
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=server.server_state, app_state=server.lifespan.state
        )

    return create_protocol


def replace_servers(
    server: uvicorn.Server, replace: Callable[[asyncio.AbstractServer], asyncio.AbstractServer]
) -> None:
    """Each of the loop servers uvicorn started, as ``replace`` returns it (it closes those it takes
    over); nothing is replaced while the patch is switched off."""
    if not is_off("uvicorn_servers"):
        server.servers = [cast(asyncio.base_events.Server, replace(s)) for s in server.servers]


def abort_connection(task: asyncio.Task[Any]) -> bool:
    """Close, at once, the connection that ``task`` (a request's or a WebSocket's, as uvicorn runs
    it) is served on, dropping what is queued for it; False when the task is not uvicorn's.

    Why: when an app returns with its response unfinished, uvicorn ``close()``s the transport, which
    first writes out everything queued, and a WebSocket's close frame waits behind what is queued; so
    a client that stopped reading kept its connection, and the megabytes queued for it, for as long
    as it liked (a stream dropped for its send timeout). ASGI gives an app no way to abort its
    connection and uvicorn hands it no transport, so the transport is found where uvicorn keeps it:
    on the object whose ``run_asgi`` the task runs (HTTP's ``RequestResponseCycle``, or the WebSocket
    protocol itself, in every one of uvicorn's implementations).
    """
    frame = getattr(task.get_coro(), "cr_frame", None)
    runner = frame.f_locals.get("self") if frame is not None and frame.f_code.co_name == "run_asgi" else None
    if runner is None or not type(runner).__module__.startswith("uvicorn.protocols."):
        return False
    # asyncio's transport or uvloop's (which does not subclass asyncio's)
    abort = getattr(getattr(runner, "transport", None), "abort", None)
    if abort is None:
        return False
    abort()
    return True
