"""Databases for the analytics tests, on SQLite and on PostgreSQL.

Repository tests get a session on a migrated database per backend, in a transaction
rolled back after each test. API tests run the app on a fresh SQLite file or, where
parametrised with ``app_backend="postgresql"``, on a fresh PostgreSQL database.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth; role ``postgres`` or else
``root``). Its databases are ``swarm_test_<random>``, created by the tests and dropped
after them. Where it is not usable the PostgreSQL cases skip, unless
``SWARM_TEST_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import create_engine
from app.core.migrate import upgrade_head
from app.core.settings import Settings
from tests.conftest import make_settings

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")  # trust auth: whichever role exists
PG_MAINTENANCE_DB = "test"
# an odd session time zone: buckets must not depend on it
PG_SESSION_TIME_ZONE = "Asia/Kolkata"


def _pg_url(user: str, database: str) -> str:
    return f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{database}"


async def _admin(user: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction
    engine = create_engine(_pg_url(user, PG_MAINTENANCE_DB)).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _first_user() -> tuple[str | None, list[str]]:
    """The first role that can create databases; and why the others could not."""
    failures: list[str] = []
    for user in PG_USERS:
        engine = create_engine(_pg_url(user, PG_MAINTENANCE_DB))
        try:
            async with engine.connect() as connection:
                can_create = await connection.scalar(
                    text("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                )
            if can_create:
                return user, failures
            failures.append(f"{user}: may not create databases")
        except Exception as exc:
            failures.append(f"{user}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
        finally:
            await engine.dispose()
    return None, failures


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_head(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_user() -> str:
    """The role to use on 127.0.0.1:5432; skips (or fails, under SWARM_TEST_REQUIRE_SERVICES=1) without one."""
    user, failures = asyncio.run(_first_user())
    if user is None:
        reason = f"PostgreSQL is not usable at {PG_HOST}:{PG_PORT} ({'; '.join(failures)})"
        if os.environ.get("SWARM_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}, and SWARM_TEST_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    return user


async def _create_database(user: str) -> str:
    name = f"swarm_test_{secrets.token_hex(6)}"
    await _admin(user, f'CREATE DATABASE "{name}"')
    return name


async def _drop_database(user: str, name: str) -> None:
    await _admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(postgres_user: str) -> Iterator[str]:
    """A migrated database for the repository tests, shared by the session (each test rolls back)."""
    name = asyncio.run(_create_database(postgres_user))
    try:
        url = _pg_url(postgres_user, name)
        asyncio.run(_migrate(url))
        yield url
    finally:
        asyncio.run(_drop_database(postgres_user, name))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("analytics") / "analytics.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=["sqlite_url", "postgres_url"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Every test that uses it runs once per backend: the same assertions, not a copy."""
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test: each test starts empty."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            if connection.dialect.name == "postgresql":
                await connection.execute(text(f"SET LOCAL TIME ZONE '{PG_SESSION_TIME_ZONE}'"))
            db = AsyncSession(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
            try:
                yield db
            finally:
                await db.close()
                await transaction.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
def app_backend(request: pytest.FixtureRequest) -> str | None:
    """The app's database: SQLite by default (None); parametrised ``indirect`` with "postgresql", the PG role."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    # resolved here, outside any event loop: the session fixture runs its own
    user: str = request.getfixturevalue("postgres_user")
    return user


@pytest.fixture
async def settings(app_backend: str | None, tmp_path: Path) -> AsyncIterator[Settings]:
    """The app's settings on a fresh SQLite file, or on a fresh PostgreSQL database."""
    if app_backend is None:
        yield make_settings(tmp_path)
        return
    name = await _create_database(app_backend)
    try:
        yield make_settings(tmp_path, database_url=_pg_url(app_backend, name))
    finally:
        await _drop_database(app_backend, name)
