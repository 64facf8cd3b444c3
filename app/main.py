"""The one way in: ``create_app(settings)``, whose lifespan owns every long-lived object.

Start order: logging, database (migrated), model and tool registries, event
bus, recorder, run manager, demo seed, recovery of a previous process's runs.
Stop order is the reverse, with live runs given a bounded grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from app import __version__, patches
from app.agents.router import router as agents_router
from app.analytics.router import router as analytics_router
from app.auth.service import announce_auth_mode
from app.conversations.router import router as conversations_router
from app.core import gc_tuning
from app.core.db import Database, utcnow
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.metrics import Metrics
from app.core.middleware import ApiAuth, BodySizeLimit, RequestContext
from app.core.migrate import upgrade_head
from app.core.openapi import install_openapi
from app.core.services import Services
from app.core.settings import Settings
from app.engine.calls import CallPolicy
from app.engine.factory import TeamFactory
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.health.router import router as health_router
from app.providers.router import FAKE_NOTICE
from app.providers.router import router as models_router
from app.runs.event_schemas import EventPage, RunEvent, StreamClosing, StreamLagged
from app.runs.repository import RunEventRepository
from app.runs.router import router as runs_router
from app.runtime.bus import EventBus
from app.runtime.cluster import Cluster
from app.runtime.execution import RuntimeDeps
from app.runtime.manager import RunManager
from app.runtime.recorder import EventRecorder
from app.runtime.recovery import recover_runs
from app.teams.router import router as teams_router
from app.teams.seed import seed_demo_team
from app.ws.router import router as ws_router

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """\
An asynchronous streaming API server for AutoGen multi-agent runs.

Define agents and teams, start a run on a task, and watch every token, message,
tool call and hand-off stream back over SSE, then read the whole history back.
Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


async def _purge_deltas(services: Services) -> None:
    """Drops the deltas of long-finished runs now and then (their messages stay for good)."""
    retention = services.settings.delta_retention_s
    if retention <= 0:
        return
    while True:
        try:
            async with services.sessionmaker() as session:
                removed = await RunEventRepository(session).purge_deltas(utcnow() - timedelta(seconds=retention))
                await session.commit()
            if removed:
                log.info("deltas_purged", removed=removed)
        except Exception as exc:
            log.warning("delta_purge_failed", error=str(exc))
        await asyncio.sleep(min(retention, 3600))


def create_app(settings: Settings | None = None, *, worker: bool = False) -> FastAPI:
    """The API server; with ``worker``, a worker: it executes queued runs and serves only health and metrics."""
    patches.install()
    settings = settings or Settings()
    if worker and not settings.distributed:
        raise ValueError("a worker needs SWARM_REDIS_URL (and a database the API replicas share)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json)
        # AutoGen's per-message tracing costs ~20% of its CPU and we export no traces
        os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
        database = Database.open(settings.database_url)
        engine = database.engine
        if settings.auto_migrate:
            await upgrade_head(engine)
        sessionmaker = database.sessionmaker()
        read_sessionmaker = database.read_sessionmaker()
        models = ModelRegistry(settings)
        tools = ToolRegistry.with_builtins(settings.tool_timeout_s)
        tools.load_entry_points(settings.tools)
        bus = EventBus(settings.watcher_buffer)
        recorder = EventRecorder(engine, bus, retry_for_s=settings.storage_retry_s)
        recorder.start()
        policy = CallPolicy(
            timeout_s=settings.model_timeout_s,
            max_retries=settings.model_max_retries,
            backoff_s=settings.model_retry_backoff_s,
        )
        factory = TeamFactory(
            models,
            tools,
            default_max_messages=settings.default_max_messages,
            policy=policy,
            fast_tokens=settings.fast_tokens,
            selector_max_tokens=settings.selector_max_tokens,
        )
        metrics = Metrics()
        cluster: Cluster | None = None
        if settings.distributed:
            cluster = Cluster.build(settings, sessionmaker, execute=worker or settings.execute_runs)
            bus.mirror = cluster.streams.append
        deps = RuntimeDeps(
            settings,
            sessionmaker,
            read_sessionmaker,
            bus,
            recorder,
            factory,
            metrics,
            streams=cluster.streams if cluster is not None else None,
        )
        manager = RunManager(deps)
        metrics.bind_live(lambda: manager.live_count, bus.live_watchers)
        services = Services(
            settings,
            database,
            sessionmaker,
            read_sessionmaker,
            models,
            tools,
            bus,
            recorder,
            manager,
            metrics,
            cluster=cluster,
        )
        app.state.services = services
        purger: asyncio.Task[None] | None = None
        collector: asyncio.Task[None] | None = None
        try:
            if settings.seed_demo and not worker:
                async with sessionmaker() as session:
                    await seed_demo_team(session)
            if cluster is not None:
                # several processes share the database: lapsed leases, not a restart, tell a lost run
                await cluster.start(manager)
            else:
                await recover_runs(sessionmaker, manager)
            purger = asyncio.create_task(_purge_deltas(services), name="delta-purger")
            if settings.gc_tuning:
                gc_tuning.tune()
                collector = asyncio.create_task(
                    gc_tuning.collect_when_idle(lambda: manager.live_count > 0), name="gc-idle"
                )
            log.info(
                "started",
                version=__version__,
                database=engine.url.render_as_string(hide_password=True),
                default_model=models.default_model,
            )
            if models.default_model.startswith("fake/"):
                log.warning("fake_default_model", notice=FAKE_NOTICE)
            await announce_auth_mode(settings, read_sessionmaker, services.auth)
            yield
        finally:
            if cluster is not None:
                cluster.stop_claiming()
            await manager.shutdown(settings.shutdown_grace_s)
            if cluster is not None:
                await cluster.stop()
            for task in (purger, collector):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await recorder.stop()
            await models.aclose()
            await database.dispose()
            log.info("stopped")

    app = FastAPI(
        title="SwarmDirector",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
    )
    install_error_handlers(app)
    install_openapi(app, [RunEvent, EventPage, StreamLagged, StreamClosing])
    app.add_middleware(ApiAuth)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    api_routers = (
        models_router,
        agents_router,
        teams_router,
        conversations_router,
        runs_router,
        analytics_router,
        ws_router,
    )
    for router in (health_router, *(() if worker else api_routers)):
        app.include_router(router)

    if not worker:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if not worker:

        @app.get("/", include_in_schema=False)
        async def chat_page() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app
