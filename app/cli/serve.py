"""`swarmdirector serve` and `swarmdirector db upgrade`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
from typing import Annotated

import typer
import uvicorn

from app.core.settings import Settings

db_cli = typer.Typer(help="Database commands.", no_args_is_help=True)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: SWARM_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SWARM_PORT or 8000).")] = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port",
            help="Listen with SO_REUSEPORT, so that several API processes share one port "
            "(the kernel spreads connections among them; Linux).",
        ),
    ] = False,
) -> None:
    """Migrate the database and serve the API."""
    from app.main import create_app, prepare_process
    from app.server import SwarmServer

    settings = Settings()
    # the app decides whether it may run without keys from the address it really listens on
    settings = Settings(host=host or settings.host, port=port or settings.port)
    prepare_process()  # before the sibling processes start: they inherit its environment
    siblings: list[subprocess.Popen[bytes]] = []
    if settings.processes > 1:
        reuse_port = True
        if settings.auto_migrate:
            _upgrade(settings.database_url)  # once, before the processes start
            settings = settings.model_copy(update={"auto_migrate": False})
        siblings = _start_siblings(settings)
    # bound before the app is built: a port that is taken fails at once
    sockets = [reuse_port_socket(settings.host, settings.port)] if reuse_port else None
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our logging: JSON lines, uvicorn's included
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    grace = settings.shutdown_grace_s + 10
    try:
        SwarmServer(config, before_exit=lambda: _stop_siblings(siblings, grace)).run(sockets=sockets)
    finally:
        _stop_siblings(siblings, grace)


def _start_siblings(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """``processes - 1`` more API processes on the same port; each dies with this one (Linux)."""
    env = {
        **os.environ,
        "SWARM_PROCESSES": "1",
        "SWARM_AUTO_MIGRATE": "false",
    }
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--reuse-port",
    ]
    return [
        subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        for _ in range(settings.processes - 1)
    ]


def _die_with_parent() -> None:
    # a parent stopped by SIGTERM ends with uvicorn re-raising the signal: the siblings get it too
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_siblings(siblings: list[subprocess.Popen[bytes]], within: float) -> None:
    for proc in siblings:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in siblings:
        try:
            proc.wait(within)
        except subprocess.TimeoutExpired:
            proc.kill()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEADDR and SO_REUSEPORT (uvicorn listens on it).

    Every process that binds the same address this way gets its own accept queue, and the kernel
    balances new connections among them: one port, several API processes, no proxy in between.
    A process that binds without SO_REUSEPORT (or as another user) still gets "address in use".
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise typer.BadParameter("SO_REUSEPORT is not available on this platform", param_hint="--reuse-port")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise typer.BadParameter(f"cannot resolve {host!r}: {exc}", param_hint="--host") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        typer.echo(f"cannot listen on {host}:{port} with SO_REUSEPORT: {exc}", err=True)
        raise typer.Exit(1) from exc
    sock.set_inheritable(True)
    return sock


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (`alembic upgrade head`)."""
    _upgrade(Settings().database_url)
    typer.echo("database is at head")


def _upgrade(database_url: str) -> None:
    from app.core.db import create_engine
    from app.core.migrate import upgrade_head

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await upgrade_head(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
