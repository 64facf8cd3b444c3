"""A running app on its own event loop thread, so that sync hypothesis tests can drive async code."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis.configuration import set_hypothesis_home_dir

from app.api.services import Services
from app.main import create_app
from tests.conftest import make_settings, services_of, started

T = TypeVar("T")

# Hypothesis keeps caches in ./.hypothesis otherwise; the examples are derandomized, nothing is worth keeping
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "swarmdirector-hypothesis")


class AppThread:
    """``create_app`` under its lifespan, on an event loop in a thread; ``run`` a coroutine on it."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.app: FastAPI = create_app(make_settings(tmp, **settings))

        async def enter() -> LifespanManager:
            # built on the loop: it detects its async library from there
            manager = started(self.app)
            await manager.__aenter__()
            return manager

        self._lifespan = self.run(enter())

    @property
    def services(self) -> Services:
        return services_of(self.app)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self._lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def app_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    harness = AppThread(tmp_path_factory.mktemp("fuzz"))
    try:
        yield harness
    finally:
        harness.close()
