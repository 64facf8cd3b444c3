"""A throw-away PostgreSQL database on 127.0.0.1:5432 that a test can take away and give back.

Skips where PostgreSQL is not usable, unless ``SWARM_TEST_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from app.core.db import create_engine

PG = "postgresql+asyncpg://{user}@127.0.0.1:5432/{database}"
PG_USERS = ("postgres", "root")


async def _admin(user: str, *statements: str) -> None:
    engine = create_engine(PG.format(user=user, database="postgres")).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class PostgresDatabase:
    user: str
    name: str

    @property
    def url(self) -> str:
        return PG.format(user=self.user, database=self.name)

    async def go_away(self) -> None:
        """New connections are refused and every open one is cut, as when the server goes down."""
        await _admin(
            self.user,
            f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'",
        )

    async def come_back(self) -> None:
        await _admin(self.user, f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')


@pytest.fixture
async def postgres_database() -> AsyncIterator[PostgresDatabase]:
    failures = []
    for user in PG_USERS:
        name = f"swarm_fault_{secrets.token_hex(5)}"
        try:
            await _admin(user, f'CREATE DATABASE "{name}"')
        except Exception as exc:
            failures.append(f"{user}: {type(exc).__name__}")
            continue
        database = PostgresDatabase(user, name)
        try:
            yield database
        finally:
            await database.come_back()
            await _admin(user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    reason = f"PostgreSQL is not usable at 127.0.0.1:5432 ({'; '.join(failures)})"
    if os.environ.get("SWARM_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and SWARM_TEST_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)
