"""The one way in, and the composition of the whole server: ``create_app(settings)``.

This module sits above every other: it alone builds the long-lived objects, picks the deployment
mode and wires the routers, and nothing imports it but the entry points (the CLI, tests, benches).

``prepare_process()`` does what concerns the whole process, once, before any app is built: it is
called by ``create_app`` and by the CLI's commands. The lifespan owns the rest. It yields the
services as a typed ``State`` (``app/api/services.py``), which every request's state carries, and
keeps them on ``app.state.services`` for what runs outside a request.

Start order (``open_services``, then ``start_services``):

1. logging;
2. the database engine, migrated (``SWARM_AUTO_MIGRATE``);
3. the model and tool registries;
4. the event bus, and the event recorder, started;
5. the team factory, the metrics, the run manager and its launcher, embedded or distributed
   (``SWARM_REDIS_URL``: the Redis cluster), chosen here and only here;
6. the ``demo`` team (not in a worker);
7. the launcher: embedded, the runs a previous process left behind are settled (queued ones start
   again); distributed, the cluster's sweeper, and in an executor its claimer and heartbeat, start;
8. the purge of old deltas, and the garbage collector's tuning with its idle collection;
9. the start-up log and whether the API is open.

Stop order (``stop_services``): the launcher (distributed, it stops claiming first), which gives
live runs ``SWARM_SHUTDOWN_GRACE_S`` to finish and then cancels them with reason ``shutdown``
(distributed, the cluster stops after them); the background tasks; the recorder; the model clients;
the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import __version__, patches
from app.agents.router import router as agents_router
from app.analytics.router import router as analytics_router
from app.api.deps import ServicesDep, authenticate
from app.api.services import Services, State
from app.auth.middleware import ApiAuth, OriginCheck, QueryKey
from app.auth.service import announce_auth_mode
from app.conversations.router import router as conversations_router
from app.core import gc_tuning
from app.core.db import Database, utcnow
from app.core.errors import install_error_handlers
from app.core.logging import configure_logging
from app.core.metrics import Metrics
from app.core.middleware import BodySizeLimit, RequestContext
from app.core.migrate import upgrade_head
from app.core.openapi import TAGS, install_openapi
from app.core.settings import Settings
from app.engine.calls import CallPolicy, ModelCallError
from app.engine.factory import TeamFactory
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.health.router import router as health_router
from app.protocols.agui.router import TAG as AGUI_TAG
from app.protocols.agui.router import router as agui_router
from app.protocols.openai import router as openai_protocol
from app.providers.router import FAKE_NOTICE
from app.providers.router import router as models_router
from app.runs.event_schemas import EventPage, RunEvent, StreamClosing, StreamLagged
from app.runs.repository import RunEventRepository
from app.runs.router import router as runs_router
from app.runtime.bus import EventBus
from app.runtime.cluster import Cluster
from app.runtime.launcher import DistributedLauncher, EmbeddedLauncher, RunLauncher
from app.runtime.manager import RunManager
from app.runtime.recorder import EventRecorder
from app.runtime.redis_bus import RedisStreams
from app.runtime.run.deps import RuntimeDeps
from app.teams.router import router as teams_router
from app.teams.seed import seed_demo_team
from app.tools.router import router as tools_router
from app.ws.router import router as ws_router

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """\
An asynchronous streaming API server for AutoGen multi-agent runs.

Define agents and teams, start a run on a task, and watch every token, message,
tool call and hand-off stream back over SSE, then read the whole history back.
Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


def prepare_process() -> None:
    """The process-wide setup, in one place (idempotent: what is done once stays done).

    - AutoGen's per-message runtime tracing is turned off, unless the environment says otherwise:
      it costs about a fifth of AutoGen's CPU and we export no traces;
    - every patch of another library's internals is installed (``app.patches``);
    - the open-file limit is raised from its soft value to its hard one: each SSE or WebSocket
      watcher holds a socket, and a soft limit of 1,024 (a common default) would cap a process
      at about a thousand of them (``make bench``'s W5 holds 10,000).

    The one process-wide effect not made here is the garbage collector's tuning
    (``app/core/gc_tuning.py``): it freezes what start-up built, so the lifespan makes it once the
    first app of the process has started (step 8 above).
    """
    os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
    patches.install()
    raise_open_files()


def raise_open_files() -> int:
    """Raise this process's soft limit on open files to its hard limit; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def open_services(settings: Settings, *, worker: bool) -> Services:
    """Steps 2 to 5: every long-lived object, built (the recorder started), nothing else running yet."""
    # no transaction outlives a lease: a process frozen mid-write must not keep its run's row locked
    database = Database.open(settings.database_url, idle_transaction_s=settings.lease_s)
    if settings.auto_migrate:
        await upgrade_head(database.engine)
    sessionmaker = database.sessionmaker()
    read_sessionmaker = database.read_sessionmaker()
    models = ModelRegistry(settings)
    tools = ToolRegistry.with_builtins(settings.tool_timeout_s)
    tools.load_entry_points(settings.tools)
    try:
        tools.mark(requires_approval=settings.tools_require_approval, idempotent=settings.tools_idempotent)
    except ValueError as exc:
        raise ValueError(f"SWARM_TOOLS_REQUIRE_APPROVAL / SWARM_TOOLS_IDEMPOTENT: {exc}") from None
    bus = EventBus(settings.watcher_buffer)
    recorder = EventRecorder(database.engine, bus, retry_for_s=settings.storage_retry_s)
    recorder.start()
    factory = team_factory(settings, models, tools)
    metrics = Metrics()
    launcher = run_launcher(settings, sessionmaker, read_sessionmaker, bus, recorder, factory, metrics, executes=worker)
    metrics.bind_live(lambda: launcher.manager.live_count, bus.live_watchers)
    return Services(
        settings,
        database,
        sessionmaker,
        read_sessionmaker,
        models,
        tools,
        bus,
        recorder,
        metrics,
        launcher,
    )


def team_factory(settings: Settings, models: ModelRegistry, tools: ToolRegistry) -> TeamFactory:
    policy = CallPolicy(
        timeout_s=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
        backoff_s=settings.model_retry_backoff_s,
    )
    return TeamFactory(
        models,
        tools,
        default_max_messages=settings.default_max_messages,
        policy=policy,
        fast_tokens=settings.fast_tokens,
        selector_max_tokens=settings.selector_max_tokens,
    )


def run_launcher(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    read_sessionmaker: async_sessionmaker[AsyncSession],
    bus: EventBus,
    recorder: EventRecorder,
    factory: TeamFactory,
    metrics: Metrics,
    *,
    executes: bool,
) -> RunLauncher:
    """The run manager and the deployment mode around it: the one place that tells the modes apart.
    ``executes``: a worker, which executes runs whatever ``SWARM_EXECUTE_RUNS`` says."""

    def manager(streams: RedisStreams | None) -> RunManager:
        deps = RuntimeDeps(settings, sessionmaker, read_sessionmaker, bus, recorder, factory, metrics, streams=streams)
        return RunManager(deps)

    if not settings.distributed:
        return EmbeddedLauncher(manager(None), bus, recorder, sessionmaker)
    cluster = Cluster.build(settings, sessionmaker, execute=executes or settings.execute_runs)
    bus.mirror = cluster.streams.append
    return DistributedLauncher(manager(cluster.streams), bus, cluster, read_sessionmaker)


async def start_services(services: Services, tasks: list[asyncio.Task[None]], *, worker: bool) -> None:
    """Steps 6 to 9; the background tasks it starts go in ``tasks`` as they start (stopped by ``stop_services``)."""
    settings = services.settings
    if settings.seed_demo and not worker:
        async with services.sessionmaker() as session:
            await seed_demo_team(session)
    await services.launcher.start()
    tasks.append(asyncio.create_task(_purge_deltas(services), name="delta-purger"))
    if settings.gc_tuning:
        gc_tuning.tune()
        manager = services.runs
        tasks.append(asyncio.create_task(gc_tuning.collect_when_idle(lambda: manager.live_count > 0), name="gc-idle"))
    log.info(
        "started",
        version=__version__,
        database=services.database.engine.url.render_as_string(hide_password=True),
        default_model=services.models.default_model,
    )
    if services.models.default_model.startswith("fake/"):
        log.warning("fake_default_model", notice=FAKE_NOTICE)
    await announce_auth_mode(settings, services.read_sessionmaker, services.auth)


async def stop_services(services: Services, tasks: list[asyncio.Task[None]]) -> None:
    """The stop order of the module's docstring; safe after a start that failed part-way."""
    await services.launcher.stop(services.settings.shutdown_grace_s)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await services.recorder.stop()
    await services.models.aclose()
    await services.database.dispose()
    log.info("stopped")


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
    prepare_process()
    settings = settings or Settings()
    if worker and not settings.distributed:
        raise ValueError("a worker needs SWARM_REDIS_URL (and a database the API replicas share)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        configure_logging(settings.log_level, settings.log_json, expected=(ModelCallError,))
        services = await open_services(settings, worker=worker)
        app.state.services = services
        tasks: list[asyncio.Task[None]] = []
        try:
            await start_services(services, tasks, worker=worker)
            yield State(services=services)
        finally:
            await stop_services(services, tasks)

    app = FastAPI(
        title="SwarmDirector",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        openapi_tags=[*TAGS, AGUI_TAG],
    )
    install_error_handlers(app)
    install_openapi(app, [RunEvent, EventPage, StreamLagged, StreamClosing])
    app.add_middleware(ApiAuth, authenticate=authenticate)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(OriginCheck, settings=settings)
    app.add_middleware(QueryKey)  # outside every middleware that may answer: no log line prints a key
    app.add_middleware(RequestContext)
    api_routers = (
        models_router,
        tools_router,
        agents_router,
        teams_router,
        conversations_router,
        runs_router,
        analytics_router,
        ws_router,
        agui_router,
    )
    for router in (health_router, *(() if worker else api_routers)):
        app.include_router(router)

    if not worker:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        openai_protocol.install(app)  # the OpenAI-compatible dialect, under /openai/v1

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(services: ServicesDep) -> Response:
        return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if not worker:

        @app.get("/", include_in_schema=False)
        async def chat_page() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return app
