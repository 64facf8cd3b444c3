"""`swarmdirector worker`: a process that claims queued runs and executes them (distributed mode)."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from app.core.settings import Settings


def worker(
    host: Annotated[str, typer.Option(help="Bind address of its health and metrics endpoints.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of `/healthz`, `/readyz` and `/metrics`.")] = 8001,
    concurrency: Annotated[
        int | None, typer.Option(help="Runs it executes at once (default: SWARM_WORKER_CONCURRENCY).", min=1)
    ] = None,
) -> None:
    """Execute queued runs: claims them from the database under a lease (needs SWARM_REDIS_URL).

    On SIGTERM it stops claiming, gives live runs SWARM_SHUTDOWN_GRACE_S to finish, then cancels
    them with reason `shutdown`.
    """
    from app.main import create_app, prepare_process
    from app.server import SwarmServer

    settings = Settings()
    if not settings.distributed:
        typer.echo("swarmdirector worker needs SWARM_REDIS_URL (and the database the API replicas use).", err=True)
        raise typer.Exit(2)
    overrides: dict[str, object] = {"execute_runs": True}
    if concurrency is not None:
        overrides["worker_concurrency"] = concurrency
    settings = settings.model_copy(update=overrides)
    prepare_process()
    config = uvicorn.Config(
        create_app(settings, worker=True),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    SwarmServer(config).run()
