"""The database engine, session factory and declarative base.

SQLite gets WAL, a busy timeout, and two engines on the one file (``Database``):

- writes go through a pool of one connection, in ``BEGIN IMMEDIATE`` transactions (a deferred
  SQLite transaction that reads and then writes fails at once with SQLITE_BUSY when another writer
  got in between; an immediate one waits). The process's writers queue for that connection, woken
  in turn: SQLite's own busy handler waits by sleeping (1, 2, 5, ... 100 ms), so writers contending
  for the file idled while it was free, and under a burst of new runs that sleeping, not the writes,
  set the time to first token. Queueing for the connection, not for a lock taken once a connection
  is in hand, also means a burst of writers opens no connections that could only wait (each is a
  thread with its own page cache);
- reads go through a pool of their own (``BEGIN DEFERRED``, ``query_only``), so a reader never
  queues behind writers.

PostgreSQL has one engine for both. Its sessions end a transaction left idle longer than
``idle_transaction_s`` (``idle_in_transaction_session_timeout``): a process frozen mid-transaction (a
long GC pause, a stopped VM) must not hold a run's row locked past its lease, or nobody could settle it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

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
# SQLite readers: SQLAlchemy's default was 5 + 10 shared with the writers; each connection is a thread
# with its own page cache
READ_POOL_SIZE = 4
READ_MAX_OVERFLOW = 6


class _WriterPool(AsyncAdaptedQueuePool):
    """SQLite's one write connection; a writer that waits for it too long fails as SQLite would."""

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked")) from None


def create_engine(url: str, *, readers: bool = False, idle_transaction_s: float | None = None) -> AsyncEngine:
    """An engine for writes (and any work that may write), or with ``readers`` for reads only.

    On SQLite the two differ (see the module's docstring); on PostgreSQL they are alike, and one
    engine can serve both.
    """
    if url.startswith("sqlite"):
        pool: dict[str, Any] = (
            {"pool_size": READ_POOL_SIZE, "max_overflow": READ_MAX_OVERFLOW}
            if readers
            else {"poolclass": _WriterPool, "pool_size": 1, "max_overflow": 0, "pool_timeout": WRITER_WAIT_S}
        )
        engine = create_async_engine(url, module=sqlite_driver.dbapi(), connect_args={"timeout": 30}, **pool)
        _configure_sqlite(engine.sync_engine, "DEFERRED" if readers else "IMMEDIATE")
        sqlite_driver.configure(engine.sync_engine)
        return engine
    connect_args: dict[str, Any] = {}
    if idle_transaction_s is not None and "+asyncpg" in url:
        timeout_ms = str(max(1, int(idle_transaction_s * 1000)))
        connect_args["server_settings"] = {"idle_in_transaction_session_timeout": timeout_ms}
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args)


def _configure_sqlite(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the driver so that BEGIN IMMEDIATE is ours
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        if begin == "DEFERRED":
            # a reader that tried to write would go around the writers' queue: it fails instead
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    statement = f"BEGIN {begin}"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
            # it goes with the transaction's first statement: no statement of SQLAlchemy's to run for it
            dbapi_connection.begin_with_next(statement)
        else:
            conn.exec_driver_sql(statement)


@dataclass(frozen=True, slots=True)
class Database:
    """One database's engines: ``engine`` for writes, ``read_engine`` for reads (the same on PostgreSQL)."""

    engine: AsyncEngine
    read_engine: AsyncEngine

    @classmethod
    def open(cls, url: str, *, idle_transaction_s: float | None = None) -> Database:
        engine = create_engine(url, idle_transaction_s=idle_transaction_s)
        return cls(engine, create_engine(url, readers=True) if url.startswith("sqlite") else engine)

    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return create_sessionmaker(self.engine)

    def read_sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return create_sessionmaker(self.read_engine)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
