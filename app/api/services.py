"""The long-lived objects one app instance owns (``Services``), and the lifespan's typed state.

The composition (``app/main.py``) builds them in its lifespan, tears them down in reverse, and
yields them as ``State``: the server copies that state into every request's scope, where
``services_in`` (and so every dependency of ``app/api/deps.py``) finds them. They are kept on
``app.state.services`` too, for what runs outside a request (the server's drain on exit) and for a
client that drives the app without lifespan state (httpx's ASGI transport, in tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypedDict

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Scope

from app.auth.service import Authenticator
from app.core.db import Database
from app.core.envelope import Envelope
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.runs.limits import RunLimits
from app.runtime.bus import EventBus
from app.runtime.launcher import RunLauncher
from app.runtime.manager import RunManager
from app.runtime.recorder import EventRecorder
from app.runtime.redis_bus import RedisStreams
from app.runtime.streams import StreamClosing, StreamLagged, follow_batches


@dataclass(slots=True)
class Services:
    settings: Settings
    database: Database
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    models: ModelRegistry
    tools: ToolRegistry
    bus: EventBus
    recorder: EventRecorder
    metrics: Metrics
    # where runs execute: this process, or whichever claims them (SWARM_REDIS_URL)
    launcher: RunLauncher
    # per-process security state; built here so the lifespan need not wire it
    auth: Authenticator = field(default_factory=Authenticator)
    limits: RunLimits = field(default_factory=RunLimits)

    @property
    def runs(self) -> RunManager:
        """The owner of this process's run tasks."""
        return self.launcher.manager

    @property
    def streams(self) -> RedisStreams | None:
        """The run streams in Redis (distributed mode); None when every run is this process's."""
        return self.launcher.streams

    def follow(
        self, run_id: str, after: int, known: list[Envelope] | None = None
    ) -> AsyncIterator[list[Envelope] | StreamLagged | StreamClosing]:
        """A run's events after ``after``, replayed then followed (``follow_batches``), as every
        surface and protocol view reads them: from this process's bus, Redis, or the database."""
        return follow_batches(
            self.read_sessionmaker,
            self.bus,
            run_id,
            after,
            remote=self.streams,
            known=known,
            retry_for_s=self.settings.storage_retry_s,
        )


class State(TypedDict):
    """What the lifespan yields; a request's ``request.state`` carries a copy."""

    services: Services


def services_in(scope: Scope) -> Services:
    """The app's services for one request (or socket): from its copy of the lifespan's state, or from
    the app when whoever drives it passes no such state."""
    state = scope.get("state")
    found = state.get("services") if state else None
    if isinstance(found, Services):
        return found
    services: Services = scope["app"].state.services
    return services
