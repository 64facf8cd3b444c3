"""uvicorn, with one addition: when it starts to stop, live streams are closed with a final event.

Plain uvicorn waits for open responses (an SSE stream of a long run never
ends by itself) and then kills them mid-frame. Draining the event bus first
lets every stream end with ``stream.closing`` and its last seq, so clients
resume cleanly, here after a restart or on another replica.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Generator

import uvicorn
from sse_starlette.sse import AppStatus

from app.core.services import Services


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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app = self.config.loaded_app if self.config.loaded else None
        services = _find_services(app)
        if services is not None:
            services.bus.drain()
        await super().shutdown(sockets)


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
