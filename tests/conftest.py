"""Shared fixtures: settings on a backend, an in-process client, and a real uvicorn.

The backends: ``embedded`` (a fresh SQLite file, the in-process bus; the default everywhere)
and ``distributed`` (a fresh PostgreSQL database cloned from a migrated template, and Redis
under a key prefix of the test's own; see ``tests/fixtures/services.py``).

In the directories of the run server (``BACKEND_DIRS``) every test that uses the ``backend``
fixture, directly or through ``settings``, ``app``, ``client``, ``live_server`` or
``live_client``, runs once per backend, with the ids ``[embedded]`` and ``[distributed]``.
A test about the embedded mode itself is marked ``embedded_only`` and runs on it alone.
Elsewhere the fixtures give the embedded backend only.

An app with settings of its own is ``serve_app(backend.settings(tmp_path, ...))`` in process, or
``with LiveServer(...) as server`` on a real uvicorn. Starting, waiting for and reading back runs
is ``tests/fixtures/runs.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app import patches
from app.api.services import Services
from app.core.settings import Settings
from app.main import create_app
from app.server import SwarmServer

pytest_plugins = ("tests.fixtures.services",)

patches.install()  # the test process starts here, as the server's entry points do

TESTS = Path(__file__).resolve().parent
BACKENDS = ("embedded", "distributed")
# the run server's directories: each test in them runs on both backends
BACKEND_DIRS = ("runs", "e2e", "runtime", "conversations", "agents", "teams", "ws", "security")
# ... but for these files: a browser against the chat page is not about the backend
EMBEDDED_FILES = ("e2e/test_chat_page.py",)

# never let a test reach a real provider or pick up a developer's configuration
_LEAKY = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if (name.startswith("SWARM_") and name != "SWARM_TEST_REQUIRE_SERVICES") or name in _LEAKY:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every trip to an aiosqlite connection's thread, by the function sent there."""
    seen: Counter[str] = Counter()
    original: Any = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen[getattr(fn, "__name__", repr(fn))] += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'swarm.db'}",
        "environment": "test",
        "log_json": False,
        "log_level": "WARNING",
        "shutdown_grace_s": 0.2,
        "model_retry_backoff_s": 0.01,
        "sse_ping_s": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _on_both_backends(metafunc: pytest.Metafunc) -> bool:
    path = Path(metafunc.definition.path).resolve()
    if not path.is_relative_to(TESTS):
        return False
    relative = path.relative_to(TESTS).as_posix()
    return (
        relative.split("/", 1)[0] in BACKEND_DIRS
        and relative not in EMBEDDED_FILES
        and metafunc.definition.get_closest_marker("embedded_only") is None
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and _on_both_backends(metafunc):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@dataclass(frozen=True)
class Backend:
    """Where a test's app keeps its state: the settings that select it, on top of the tests' defaults."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        return self.name == "distributed"

    def settings(self, tmp_path: Path, **overrides: Any) -> Settings:
        """``make_settings`` on this backend; every app a test makes with these shares its database."""
        return make_settings(tmp_path, **{**self.overrides, **overrides})


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """``embedded`` unless parametrised (see ``pytest_generate_tests``) with ``distributed``."""
    name = getattr(request, "param", "embedded")
    if name == "embedded":
        return Backend("embedded")
    # resolved only for the distributed cases: the embedded ones never touch PostgreSQL or Redis
    redis_url: str = request.getfixturevalue("redis_url")
    redis_prefix: str = request.getfixturevalue("redis_prefix")
    database_url: str = request.getfixturevalue("fresh_postgres_url")
    return Backend(name, {"database_url": database_url, "redis_url": redis_url, "redis_prefix": redis_prefix})


@pytest.fixture
def settings(backend: Backend, tmp_path: Path) -> Settings:
    return backend.settings(tmp_path)


def started(app: FastAPI) -> LifespanManager:
    """``app`` under its lifespan, started and stopped within bounds that a loaded machine meets."""
    return LifespanManager(app, startup_timeout=30, shutdown_timeout=30)


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that calls ``app`` in process (the ASGI transport buffers a whole body: no streaming timing)."""
    # a loopback Host, as a real client of a loopback server sends (OriginCheck refuses others)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """``create_app(settings)`` started, and a client of it: for an app with settings of its own."""
    application = create_app(settings)
    async with started(application), asgi_client(application) as client:
        yield application, client


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with started(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


class LiveServer:
    """A real uvicorn on a free loopback port, in a thread with its own event loop."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = SwarmServer(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def services(self) -> Services:
        return services_of(self.app)

    def start(self) -> LiveServer:
        self._thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn failed to start")
            threading.Event().wait(0.05)
        raise RuntimeError("uvicorn did not start within 30 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def client(self) -> httpx.AsyncClient:
        """A client of this server over loopback: a stream arrives as it is sent."""
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
async def live_client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with live_server.client() as c:
        yield c
