"""`swarmdirector run --local`: the whole server inside the CLI's process, on a free loopback port.

The run then takes exactly the path it takes on a real server (validation,
storage, events, cancel), and the CLI talks to it the same way. uvicorn runs
in a thread of its own, so the terminal's Ctrl-C stays with the CLI. The
settings are the server's (``SWARM_*``, ``.env``): the same database a
``swarmdirector serve`` would use, quiet logs unless ``SWARM_LOG_LEVEL`` says
otherwise. Its keys are that database's: where keys are required, pass one.

Do not point it at a database a running server is using: a starting server
settles every run it finds unfinished, the other server's included.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from types import TracebackType

import httpx
import uvicorn

from app.core.settings import Settings

START_TIMEOUT_S = 60.0


class LocalServer:
    def __init__(self, settings: Settings) -> None:
        from app.main import create_app
        from app.server import SwarmServer

        self.settings = settings
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings),
            log_level="error",
            lifespan="on",
            timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        )
        self.server = SwarmServer(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="local-server", daemon=True
        )
        self.notice: str | None = None

    @classmethod
    def from_environment(cls) -> LocalServer:
        from app.main import prepare_process

        prepare_process()
        # it listens on loopback whatever SWARM_HOST says (that is where `serve` would bind)
        if os.environ.get("SWARM_LOG_LEVEL"):
            return cls(Settings(host="127.0.0.1"))
        return cls(Settings(host="127.0.0.1", log_level="ERROR"))

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the local server failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local server did not start within {START_TIMEOUT_S:g} s")
            time.sleep(0.02)
        if self.settings.default_model is None:
            # nobody chose the fake model: say why the replies are placeholder text
            self.notice = httpx.get(self.url + "/v1/models", timeout=10).json().get("notice")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=self.settings.shutdown_grace_s + 10)
        self._sock.close()
