"""SQLite's writers queue for the one write connection: they take turns, never sleep in the busy
handler, open no connection that could only wait, and a writer that cannot get the file in time
fails as SQLite would (``database is locked``). Readers have their own pool and never wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from app.core import db
from app.core.db import Database, create_engine


async def open_database(path: Path) -> Database:
    database = Database.open(f"sqlite+aiosqlite:///{path}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL)"))
    return database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "w.db")
    yield database
    await database.dispose()


async def count(database: Database) -> int:
    async with database.read_sessionmaker()() as session:
        return int((await session.execute(text("SELECT count(*) FROM t"))).scalar_one())


def connections(database: Database) -> dict[str, list[Any]]:
    """Every connection each engine opens from now on."""
    opened: dict[str, list[Any]] = {"write": [], "read": []}
    for name, engine in (("write", database.engine), ("read", database.read_engine)):
        event.listen(engine.sync_engine, "connect", lambda conn, _record, name=name: opened[name].append(conn))
    return opened


async def test_many_concurrent_writers_all_commit_on_one_connection(database: Database) -> None:
    maker = database.sessionmaker()
    await database.engine.dispose()  # no connection kept from the set-up
    opened = connections(database)
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
    assert await count(database) == 60
    assert most == 1  # one write transaction at a time
    assert len(opened["write"]) == 1, "writers wait for the write connection, not with one of their own"


async def test_a_failed_or_abandoned_transaction_frees_the_writer(database: Database) -> None:
    maker = database.sessionmaker()
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
    assert await count(database) == 1


async def test_readers_do_not_wait_for_the_writer(database: Database) -> None:
    async with database.sessionmaker()() as writer:
        await writer.execute(text("INSERT INTO t (n) VALUES (1)"))
        async with asyncio.timeout(5):
            # WAL: readers see the last commit, at once, many at a time
            assert await asyncio.gather(*(count(database) for _ in range(8))) == [0] * 8
        await writer.commit()
    assert await count(database) == 1
    async with database.read_sessionmaker()() as reader:
        await reader.execute(text("SELECT count(*) FROM t"))
        with pytest.raises(OperationalError, match="attempt to write a readonly database"):
            await reader.execute(text("INSERT INTO t (n) VALUES (3)"))
            await reader.commit()


async def test_a_writer_that_waits_too_long_gets_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITER_WAIT_S", 0.2)
    database = await open_database(tmp_path / "slow.db")
    try:
        maker = database.sessionmaker()
        async with maker() as holder:
            await holder.execute(text("INSERT INTO t (n) VALUES (1)"))
            with pytest.raises(OperationalError, match="database is locked"):
                async with maker() as other:
                    await other.execute(text("INSERT INTO t (n) VALUES (2)"))
            await holder.commit()
        assert await count(database) == 1
    finally:
        await database.dispose()


def test_postgresql_has_one_engine_for_both() -> None:
    database = Database.open("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # nothing is connected
    assert database.read_engine is database.engine
    assert create_engine("sqlite+aiosqlite:///x.db").pool.size() == 1
    assert create_engine("sqlite+aiosqlite:///x.db", readers=True).pool.size() == db.READ_POOL_SIZE
