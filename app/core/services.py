"""The long-lived objects one app instance owns, built and torn down by its lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.service import Authenticator
from app.core.limits import RunLimits
from app.core.metrics import Metrics
from app.core.settings import Settings
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.runtime.bus import EventBus
from app.runtime.manager import RunManager
from app.runtime.recorder import EventRecorder


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
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
