"""The one-trip aiosqlite adapter (``app.core.sqlite_driver``): the same results and errors as
SQLAlchemy's own adapter, one trip to the connection's thread per statement (a transaction's
``BEGIN`` goes with its first), and none to end a transaction that is not open."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiosqlite
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


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every trip to an aiosqlite connection's thread, by the function sent there."""
    seen: Counter[str] = Counter()
    original: Any = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen[getattr(fn, "__name__", repr(fn))] += 1
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


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
        assert trips == Counter({"_begin_then": 1, "_execute": 1, "commit": 1})
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


def test_the_server_uses_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert isinstance(engine.dialect.dbapi, sqlite_driver.OneTripDbapi)
