"""`swarmdirector serve` and `swarmdirector db upgrade`."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
import uvicorn

from app.core.settings import Settings

db_cli = typer.Typer(help="Database commands.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: SWARM_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SWARM_PORT or 8000).")] = None,
) -> None:
    """Migrate the database and serve the API."""
    from app.main import create_app
    from app.server import SwarmServer

    settings = Settings()
    # the app decides whether it may run without keys from the address it really listens on
    settings = Settings(host=host or settings.host, port=port or settings.port)
    os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our logging: JSON lines, uvicorn's included
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    SwarmServer(config).run()


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (`alembic upgrade head`)."""
    from app.core.db import create_engine
    from app.core.migrate import upgrade_head

    settings = Settings()

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo("database is at head")
