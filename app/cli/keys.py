"""`swarmdirector keys create | list | revoke`: API keys, straight in the database.

These commands open the database the server uses (``SWARM_DATABASE_URL``), so
they work with the server stopped or running; a running server honours a new
or revoked key at its next request. The secret is printed once, on stdout and
alone, so ``KEY=$(swarmdirector keys create --name ci)`` captures it; every
other line goes to stderr. Only its SHA-256 is stored.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.auth.repository import ApiKeyRepository
from app.auth.service import LOCAL_PRINCIPAL, new_key
from app.core.settings import Settings

keys_cli = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)

PRINCIPAL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
T = TypeVar("T")


def _with_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from app.core.db import create_engine, create_sessionmaker
    from app.core.migrate import upgrade_head

    settings = Settings()

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            if settings.auto_migrate:
                await upgrade_head(engine)  # a key may be the first thing a fresh database holds
            async with create_sessionmaker(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys_cli.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the key is for (shown by `keys list`).")],
    principal: Annotated[
        str,
        typer.Option(
            help=(
                "Who the key acts as. Everything made without a key on an open server belongs to "
                f"'{LOCAL_PRINCIPAL}', so the default keeps that data reachable."
            )
        ),
    ] = LOCAL_PRINCIPAL,
) -> None:
    """Create a key and print it once."""
    name = name.strip()
    if not name or len(name) > 100:
        raise typer.BadParameter("give a name of 1 to 100 characters", param_hint="--name")
    if not PRINCIPAL_PATTERN.match(principal):
        raise typer.BadParameter(
            "letters, digits and _ . @ - (up to 64, starting with a letter or digit)", param_hint="--principal"
        )

    async def work(session: AsyncSession) -> tuple[ApiKey, str]:
        row, secret = new_key(name, principal)
        ApiKeyRepository(session).add(row)
        await session.commit()
        return row, secret

    row, secret = _with_session(work)
    typer.echo(
        f"Created API key {row.id} ({row.prefix}...) named '{row.name}' for principal '{row.principal_id}'.", err=True
    )
    typer.echo("It is shown only this once; store it now. Send it as `Authorization: Bearer <key>`.", err=True)
    typer.echo(secret)


@keys_cli.command("list")
def list_keys() -> None:
    """List keys (never their secrets)."""

    async def work(session: AsyncSession) -> list[ApiKey]:
        return await ApiKeyRepository(session).all()

    rows = _with_session(work)
    if not rows:
        typer.echo("No API keys. Create one with `swarmdirector keys create --name NAME`.", err=True)
        return
    header = ("ID", "PREFIX", "NAME", "PRINCIPAL", "CREATED", "STATUS")
    lines = [
        (
            r.id,
            r.prefix + "...",
            r.name,
            r.principal_id,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, *lines]:
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@keys_cli.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")]) -> None:
    """Revoke a key: requests with it get 401 from the next one on."""

    async def work(session: AsyncSession) -> tuple[ApiKey | None, bool]:
        repo = ApiKeyRepository(session)
        row = await repo.get(key_id)
        if row is None:
            return None, False
        changed = await repo.revoke(row)
        await session.commit()
        return row, changed

    row, changed = _with_session(work)
    if row is None:
        typer.echo(f"No API key with id '{key_id}' (see `swarmdirector keys list`).", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"Revoked {row.id} ('{row.name}')." if changed else f"{row.id} ('{row.name}') was already revoked.")
