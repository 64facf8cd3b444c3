"""SQLite's writers queue on one lock per process: they take turns, never sleep in the busy handler,
and a writer that cannot get the file in time fails as SQLite would (``database is locked``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import db
from app.core.db import create_engine, create_sessionmaker


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with eng.begin() as conn:
        await conn.execute(text("CREATE TABLE t (n INTEGER NOT NULL)"))
    yield eng
    await eng.dispose()


async def count(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine, read_only=True)() as session:
        return int((await session.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_many_concurrent_writers_all_commit(engine: AsyncEngine) -> None:
    maker = create_sessionmaker(engine)
    inside = 0
    most = 0

    async def write(n: int) -> None:
        nonlocal inside, most
        async with maker() as session:
            await session.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)  # let the others try to get in
            inside -= 1
            await session.commit()

    await asyncio.gather(*(write(n) for n in range(60)))
    assert await count(engine) == 60
    assert most == 1  # one write transaction at a time


async def test_a_failed_or_abandoned_transaction_frees_the_writer(engine: AsyncEngine) -> None:
    maker = create_sessionmaker(engine)
    with pytest.raises(OperationalError):
        async with maker() as session:
            await session.execute(text("INSERT INTO nowhere VALUES (1)"))
    async with maker() as session:
        await session.execute(text("INSERT INTO t (n) VALUES (1)"))
        # closed without a commit: rolled back
    async with asyncio.timeout(5):
        async with maker() as session:
            await session.execute(text("INSERT INTO t (n) VALUES (2)"))
            await session.commit()
    assert await count(engine) == 1


async def test_readers_do_not_wait_for_the_writer(engine: AsyncEngine) -> None:
    async with create_sessionmaker(engine)() as writer:
        await writer.execute(text("INSERT INTO t (n) VALUES (1)"))
        async with asyncio.timeout(5):
            assert await count(engine) == 0  # WAL: the reader sees the last commit, at once
        await writer.commit()
    assert await count(engine) == 1


async def test_a_writer_that_waits_too_long_gets_database_is_locked(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITER_WAIT_S", 0.2)
    maker = create_sessionmaker(engine)
    async with maker() as holder:
        await holder.execute(text("INSERT INTO t (n) VALUES (1)"))
        with pytest.raises(OperationalError, match="database is locked"):
            async with maker() as other:
                await other.execute(text("INSERT INTO t (n) VALUES (2)"))
        await holder.commit()
    assert await count(engine) == 1
