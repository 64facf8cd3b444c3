"""The long-lived objects one app instance owns, built and torn down by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.service import Authenticator
from app.core.db import Database
from app.core.limits import RunLimits
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.runtime.bus import EventBus
from app.runtime.cluster import Cluster
from app.runtime.manager import RunManager
from app.runtime.recorder import EventRecorder
from app.runtime.redis_bus import RedisStreams


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
    runs: RunManager
    metrics: Metrics
    # per-process security state; built here so the lifespan need not wire it
    auth: Authenticator = field(default_factory=Authenticator)
    limits: RunLimits = field(default_factory=RunLimits)
    # distributed mode (SWARM_REDIS_URL): Redis streams, signals, the run queue
    cluster: Cluster | None = None

    @property
    def streams(self) -> RedisStreams | None:
        return self.cluster.streams if self.cluster is not None else None
