"""The database engine, session factory and declarative base.

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` transactions (a
deferred SQLite transaction that reads and then writes fails at once with
SQLITE_BUSY when another writer got in between; an immediate one waits).
The process's writers also queue on an asyncio lock before ``BEGIN
IMMEDIATE``: SQLite's own busy handler waits by sleeping (1, 2, 5, ... 100
ms), so writers contending for the file idled while it was free, and under a
burst of new runs that sleeping, not the writes, set the time to first token.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import await_, in_greenlet

from app.core import sqlite_driver

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        # SQLite keeps the wall-clock text; store UTC so every value reads back the same
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


WRITER_WAIT_S = 30.0  # like the busy timeout: how long a write transaction waits for the file


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # SQLAlchemy's default pool (5 + 10 overflow): each aiosqlite connection is a thread with its
        # own page cache, and a pool of 20 kept for bursts cost ~70 KB more per live run in W2
        engine = create_async_engine(
            url, module=sqlite_driver.dbapi(), connect_args={"timeout": 30}, pool_size=5, max_overflow=10
        )
        _configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the driver so that BEGIN IMMEDIATE is ours
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # one writer at a time in this process, woken in turn (other processes still meet the busy timeout)
    writer = asyncio.Lock()
    holder: list[Any] = [None]  # the DBAPI connection holding ``writer``

    async def acquire() -> None:
        try:
            async with asyncio.timeout(WRITER_WAIT_S):
                await writer.acquire()
        except TimeoutError:
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")) from None

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        if mode == "IMMEDIATE" and in_greenlet():
            await_(acquire())
            holder[0] = conn.connection.dbapi_connection
        conn.exec_driver_sql(f"BEGIN {mode}")

    def release(dbapi_connection: Any) -> None:
        # a transaction ends with its connection back in the pool (or thrown away)
        if dbapi_connection is not None and dbapi_connection is holder[0]:
            holder[0] = None
            writer.release()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        release(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        release(dbapi_connection)


def create_sessionmaker(engine: AsyncEngine, *, read_only: bool = False) -> async_sessionmaker[AsyncSession]:
    """Sessions that write take SQLite's write lock up front; read-only ones never take it."""
    bind = engine.execution_options(sqlite_begin="DEFERRED") if read_only else engine
    return async_sessionmaker(bind, expire_on_commit=False, autoflush=False)
