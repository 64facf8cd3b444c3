"""The one-trip aiosqlite adapter (``app.core.sqlite_driver``): the same results and errors as
SQLAlchemy's own adapter, one trip to the connection's thread per statement (a transaction's
``BEGIN`` goes with its first), and none to end a transaction that is not open; a transaction
that defers its writes sends them with its next trip."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core import sqlite_driver
from app.core.db import create_engine, create_sessionmaker

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String, nullable=False, unique=True),
    Column("n", Integer, nullable=False),
)
marks = Table(  # no autoincrement key: SQLAlchemy asks for no last row id after an insert
    "marks",
    metadata,
    Column("key", String, primary_key=True),
    Column("n", Integer, nullable=False),
)


async def engines(tmp_path: Path) -> tuple[AsyncEngine, AsyncEngine]:
    ours = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ours.db'}", module=sqlite_driver.dbapi())
    stock = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}")
    for engine in (ours, stock):
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    return ours, stock


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    ours, stock = await engines(tmp_path)
    yield ours, stock
    await ours.dispose()
    await stock.dispose()


async def scenario(engine: AsyncEngine) -> list[Any]:
    """Statements of every kind SQLAlchemy sends, and what each one answers."""
    out: list[Any] = []
    async with engine.begin() as conn:
        r = await conn.execute(insert(items).values(name="a", n=1))
        out.append(("insert pk", r.inserted_primary_key, r.rowcount))
        r = await conn.execute(insert(items), [{"name": f"m{i}", "n": i} for i in range(5)])
        out.append(("executemany", r.rowcount))
        r = await conn.execute(insert(items).values(name="r", n=7).returning(items.c.id, items.c.name))
        out.append(("returning", r.all()))
        r = await conn.execute(update(items).where(items.c.n < 3).values(n=items.c.n + 100))
        out.append(("update", r.rowcount))
        r = await conn.execute(select(items.c.name, items.c.n).order_by(items.c.id))
        out.append(("keys", list(r.keys())))
        out.append(("rows", [tuple(row) for row in r]))
        r = await conn.execute(select(items).where(items.c.name == "nobody"))
        out.append(("no rows", r.first()))
        r = await conn.execute(text("SELECT count(*), max(n) FROM items"))
        out.append(("scalar row", tuple(r.one())))
        r = await conn.execute(delete(items).where(items.c.name.like("m%")))
        out.append(("delete", r.rowcount))
    async with engine.connect() as conn:
        streamed = await conn.stream(select(items.c.name).order_by(items.c.name))  # server-side cursor
        out.append(("streamed", [row[0] async for row in streamed]))
    return out


async def test_same_answers_as_sqlalchemys_adapter(pair: tuple[AsyncEngine, AsyncEngine]) -> None:
    ours, stock = pair
    mine, theirs = await scenario(ours), await scenario(stock)
    assert mine == theirs
    assert ("rows", [("a", 101), ("m0", 100), ("m1", 101), ("m2", 102), ("m3", 3), ("m4", 4), ("r", 7)]) in mine


async def test_errors_are_sqlalchemys_and_lose_nothing(pair: tuple[AsyncEngine, AsyncEngine]) -> None:
    for engine in pair:
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name="a", n=1))
        with pytest.raises(IntegrityError) as duplicate:
            async with engine.begin() as conn:
                await conn.execute(insert(items).values(name="b", n=2))
                await conn.execute(insert(items).values(name="a", n=3))
        assert isinstance(duplicate.value.orig, sqlite3.IntegrityError)
        with pytest.raises(OperationalError, match="no such table"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT * FROM nowhere"))
        async with engine.connect() as conn:
            # the failed transaction took "b" with it; "a" was committed before
            assert (await conn.execute(select(items.c.name))).scalars().all() == ["a"]


async def test_one_trip_per_statement(tmp_path: Path, trips: Counter[str]) -> None:
    ours, stock = await engines(tmp_path)
    try:
        for engine in (ours, stock):  # connections made before counting
            async with engine.connect() as conn:
                await conn.execute(select(items))

        async def statements(engine: AsyncEngine) -> int:
            trips.clear()
            async with engine.begin() as conn:
                await conn.execute(insert(items).values(name=f"x{id(engine)}", n=1))
                await conn.execute(select(items))
                await conn.execute(update(items).values(n=2))
            return sum(trips.values())

        # three statements and the commit (the pool's reset after it has nothing to end)
        assert await statements(ours) == 3 + 1
        # SQLAlchemy's adapter: cursor, execute, fetch and close per statement, and a reset rollback
        assert await statements(stock) > 10
    finally:
        await ours.dispose()
        await stock.dispose()


async def test_an_open_transaction_is_still_ended(tmp_path: Path, trips: Counter[str]) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        maker = create_sessionmaker(engine)
        async with maker() as session:
            await session.execute(insert(items).values(name="kept", n=1))
            await session.commit()
        trips.clear()
        async with maker() as session:
            await session.execute(insert(items).values(name="dropped", n=1))
            # closed without a commit: its BEGIN IMMEDIATE transaction is rolled back for real
        assert trips["rollback"] == 1
        async with create_sessionmaker(engine)() as session:
            assert (await session.execute(select(items.c.name))).scalars().all() == ["kept"]
        trips.clear()
        async with engine.connect() as conn:  # no transaction begun: nothing to roll back on return
            pass
        assert trips["rollback"] == 0
    finally:
        await engine.dispose()


async def test_begin_goes_with_the_first_statement_and_really_begins(tmp_path: Path, trips: Counter[str]) -> None:
    path = tmp_path / "app.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")  # every transaction: BEGIN IMMEDIATE
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        trips.clear()
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name="a", n=1))
            # the write lock is held from the first statement on: another connection cannot write
            other = sqlite3.connect(path, timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
            await conn.execute(select(items))
        assert trips == Counter({"_steps": 1, "_execute": 1, "commit": 1})
        trips.clear()
        async with engine.begin() as conn:
            pass  # a transaction that sends nothing sends no BEGIN either, nor its end
        assert sum(trips.values()) == 0
        # a first statement that fails: the transaction it began is rolled back, the next one is fresh
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert(items).values(name="a", n=2))
        async with engine.begin() as conn:
            await conn.execute(insert(items).values(name="b", n=3))
        async with engine.connect() as conn:
            assert (await conn.execute(select(items.c.name).order_by(items.c.name))).scalars().all() == ["a", "b"]
    finally:
        await engine.dispose()


async def test_a_single_read_is_one_trip_on_a_reader_only(tmp_path: Path, trips: Counter[str]) -> None:
    path = tmp_path / "app.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    reader = create_engine(f"sqlite+aiosqlite:///{path}", readers=True)  # BEGIN DEFERRED, query_only
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(items).values(name="a", n=1))
        one = select(items.c.name).execution_options(**sqlite_driver.SINGLE_READ)
        async with create_sessionmaker(reader)() as session:
            await session.execute(select(items))  # the pool's connection, made before counting
        trips.clear()
        async with create_sessionmaker(reader)() as session:
            assert (await session.execute(one)).scalars().all() == ["a"]
        # the read alone, with no BEGIN: SQLite held no transaction open, so none was ended
        assert trips == Counter({"_execute": 1})
        trips.clear()
        async with create_sessionmaker(reader)() as session:
            await session.execute(select(items.c.name))  # without the option: BEGIN with it, and a rollback
        assert trips == Counter({"_steps": 1, "rollback": 1})
        # a writer keeps its BEGIN IMMEDIATE: the lock is held from that statement on
        async with engine.begin() as conn:
            await conn.execute(one)
            other = sqlite3.connect(path, timeout=0)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            other.close()
            await conn.execute(insert(items).values(name="b", n=2))
        async with create_sessionmaker(reader)() as session:
            assert (await session.execute(one)).scalars().all() == ["a", "b"]
    finally:
        await engine.dispose()
        await reader.dispose()


def test_the_server_uses_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert isinstance(engine.dialect.dbapi, sqlite_driver.OneTripDbapi)


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")  # the server's write engine
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _marks(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {key: n for key, n in (await conn.execute(select(marks.c.key, marks.c.n))).all()}


DEFER = sqlite_driver.DEFER_WRITE


async def test_deferred_writes_go_with_the_commit_in_one_trip(writer: AsyncEngine, trips: Counter[str]) -> None:
    trips.clear()
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks), [{"key": "a", "n": 1}, {"key": "b", "n": 2}], execution_options=DEFER)
        await session.execute(insert(marks), [{"key": "c", "n": 3}], execution_options=DEFER)
        await session.execute(update(marks).where(marks.c.key == "a").values(n=10), execution_options=DEFER)
        assert sum(trips.values()) == 0  # nothing sent yet
        await session.commit()
    # BEGIN IMMEDIATE, three writes and the commit: one trip
    assert trips == Counter({"_steps": 1})
    assert await _marks(writer) == {"a": 10, "b": 2, "c": 3}


async def test_the_next_statement_takes_the_deferred_writes_with_it(writer: AsyncEngine, trips: Counter[str]) -> None:
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks), [{"key": "a", "n": 1}, {"key": "b", "n": 1}], execution_options=DEFER)
        trips.clear()
        # a read sees the writes before it: they go first, in its trip
        assert (await session.execute(select(marks.c.key).order_by(marks.c.key))).scalars().all() == ["a", "b"]
        assert trips == Counter({"_steps": 1})
        await session.execute(update(marks).values(n=2), execution_options=DEFER)
        trips.clear()
        # a write without the option is sent at once, the waiting one ahead of it; its count is its own
        result = await session.execute(update(marks).where(marks.c.key == "a").values(n=3))
        assert trips == Counter({"_steps": 1})
        assert result.rowcount == 1
        await session.commit()
    assert await _marks(writer) == {"a": 3, "b": 2}


async def test_a_deferred_write_reports_no_count(writer: AsyncEngine) -> None:
    async with create_sessionmaker(writer)() as session:
        result = await session.execute(insert(marks), [{"key": "a", "n": 1}], execution_options=DEFER)
        assert result.rowcount == -1  # not known: the write has not been sent
        await session.commit()
    assert await _marks(writer) == {"a": 1}


async def test_only_writes_that_read_nothing_back_wait(writer: AsyncEngine) -> None:
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks).values(key="z", n=0))
        # a read, and a write with RETURNING, asked to wait: they are sent at once, with their rows
        assert (await session.execute(select(marks.c.key), execution_options=DEFER)).scalars().all() == ["z"]
        stmt = insert(marks).values(key="a", n=1).returning(marks.c.n)
        returned = await session.execute(stmt, execution_options=DEFER)
        assert returned.scalar_one() == 1
        await session.commit()
    assert await _marks(writer) == {"a": 1, "z": 0}


@pytest.mark.parametrize("fails_at", ["commit", "next statement"])
async def test_a_failing_deferred_write_fails_where_it_is_sent_and_stores_nothing(
    writer: AsyncEngine, fails_at: str
) -> None:
    async with writer.begin() as conn:
        await conn.execute(insert(marks).values(key="a", n=1))
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks), [{"key": "b", "n": 2}], execution_options=DEFER)
        await session.execute(insert(marks), [{"key": "a", "n": 3}], execution_options=DEFER)  # the key is taken
        with pytest.raises(IntegrityError, match="UNIQUE"):
            if fails_at == "commit":
                await session.commit()
            else:
                await session.execute(update(marks).values(n=5))
    # after a failed commit SQLAlchemy sends SQLite no rollback (it takes the transaction for ended):
    # the adapter rolled it back in the same trip, so the (only) connection is whole again
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks), [{"key": "c", "n": 4}], execution_options=DEFER)
        await session.commit()
    assert await _marks(writer) == {"a": 1, "c": 4}


async def test_a_rollback_drops_what_was_never_sent(writer: AsyncEngine, trips: Counter[str]) -> None:
    trips.clear()
    async with create_sessionmaker(writer)() as session:
        await session.execute(insert(marks), [{"key": "a", "n": 1}], execution_options=DEFER)
        await session.rollback()
        assert sum(trips.values()) == 0
        await session.execute(insert(marks), [{"key": "b", "n": 1}], execution_options=DEFER)
        await session.commit()
    assert await _marks(writer) == {"b": 1}


async def test_the_option_changes_nothing_on_other_adapters(pair: tuple[AsyncEngine, AsyncEngine]) -> None:
    _ours, stock = pair  # SQLAlchemy's own adapter, as PostgreSQL's: the option is ignored
    async with create_sessionmaker(stock)() as session:
        result = await session.execute(insert(marks), [{"key": "a", "n": 1}], execution_options=DEFER)
        assert result.rowcount == 1
        await session.commit()
    assert await _marks(stock) == {"a": 1}
