"""Databases for the analytics tests, on SQLite and on PostgreSQL.

Repository tests get a session on a migrated database per backend, in a transaction
rolled back after each test. API tests run the app on a fresh SQLite file or, where
parametrised with ``app_backend="postgresql"``, on a fresh PostgreSQL database.

The PostgreSQL databases come from ``tests/fixtures/services.py`` (clones of a template
migrated once per session). Where PostgreSQL is not usable the PostgreSQL cases skip,
unless ``SWARM_TEST_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import create_engine
from app.core.settings import Settings
from tests.conftest import make_settings
from tests.fixtures.services import create_database, drop_database, migrate, pg_url, run_isolated

# an odd session time zone: buckets must not depend on it
PG_SESSION_TIME_ZONE = "Asia/Kolkata"


@pytest.fixture(scope="session")
def postgres_url(postgres_user: str, postgres_template: str) -> Iterator[str]:
    """A migrated database for the repository tests, shared by the session (each test rolls back)."""
    name = run_isolated(create_database(postgres_user, template=postgres_template))
    try:
        yield pg_url(postgres_user, name)
    finally:
        run_isolated(drop_database(postgres_user, name))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("analytics") / "analytics.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_isolated(migrate(url))
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
    """The app's database: SQLite by default (None); parametrised ``indirect`` with "postgresql", a fresh one's URL."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def settings(app_backend: str | None, tmp_path: Path) -> Settings:
    """The app's settings on a fresh SQLite file, or on a fresh PostgreSQL database."""
    if app_backend is None:
        return make_settings(tmp_path)
    return make_settings(tmp_path, database_url=app_backend)
