"""What every run of a process shares: given by the composition, never built here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.metrics import Metrics
from app.core.settings import Settings
from app.engine.factory import TeamFactory
from app.runtime.bus import EventBus
from app.runtime.recorder import EventRecorder
from app.runtime.redis_bus import RedisStreams


@dataclass(frozen=True, slots=True)
class RuntimeDeps:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    bus: EventBus
    recorder: EventRecorder
    factory: TeamFactory
    metrics: Metrics
    # distributed mode: the run streams in Redis (a retried run continues after their last seq)
    streams: RedisStreams | None = None
