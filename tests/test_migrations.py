"""The alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.core.migrate import upgrade_head
from app.schema import Base

TABLES = {"agents", "api_keys", "conversations", "messages", "runs", "run_events", "teams"}


@pytest.fixture
async def migrated(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}")
    try:
        await upgrade_head(engine)
        yield engine
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_head_creates_every_table(migrated: AsyncEngine) -> None:
    async with migrated.connect() as connection:
        tables = await connection.run_sync(_tables)
    assert tables >= TABLES
    assert "alembic_version" in tables
    assert tables - {"alembic_version"} == set(Base.metadata.tables)


async def test_the_migrated_schema_matches_the_models(migrated: AsyncEngine) -> None:
    async with migrated.connect() as connection:
        differences = await connection.run_sync(_diff)
    assert differences == []


async def test_upgrade_head_twice_is_a_no_op(migrated: AsyncEngine) -> None:
    await upgrade_head(migrated)
    async with migrated.connect() as connection:
        assert await connection.run_sync(_diff) == []
        assert await connection.run_sync(_tables) >= TABLES


async def test_an_empty_database_differs_from_the_models(tmp_path: Path) -> None:
    """The comparison is not blind: without the migrations, every table is reported missing."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    added = {d[1].name for d in differences if d[0] == "add_table"}
    assert added == set(Base.metadata.tables)


async def test_times_in_other_zones_are_stored_as_the_same_instant(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select

    from app.core.db import create_sessionmaker
    from app.teams.models import Team

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'tz.db'}")
    try:
        await upgrade_head(engine)
        kolkata = datetime(2026, 11, 24, 10, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        async with create_sessionmaker(engine)() as session:
            session.add(
                Team(id="team_tz", principal_id="p", name="tz", spec={}, created_at=kolkata, updated_at=kolkata)
            )
            await session.commit()
        async with create_sessionmaker(engine)() as session:
            stored = (await session.scalars(select(Team.created_at))).one()
        assert stored == kolkata
        assert stored.utcoffset() == timedelta(0)
    finally:
        await engine.dispose()
