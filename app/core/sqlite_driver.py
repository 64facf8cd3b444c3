"""SQLAlchemy's aiosqlite adapter, with one trip to the connection's thread per statement.

aiosqlite runs each SQLite connection in a thread of its own, and every call
it makes on the connection is a trip there and back: a queue put that wakes
the thread, and a ``call_soon_threadsafe`` that wakes the event loop, each
with a GIL hand-over. SQLAlchemy's adapter makes three or four such trips
per statement (make a cursor, execute, fetch the rows, close the cursor) and
one more for the rollback that resets every connection returned to the pool,
even when no transaction is open. A new run's statements cost about 100 µs
of CPU per trip on a two-core machine, and under a burst of runs the
hand-overs, not the SQL, were most of the database's share of start-up.

Here a statement is one trip: the cursor is made, executed, read to the end
and closed in the connection's thread, and the adapter keeps what SQLAlchemy
asks of it afterwards (rows, description, rowcount, last row id). A ``BEGIN``
waits to go with the transaction's first statement, in its trip. A rollback
or commit with no transaction open (the pool's reset after a commit, or the
end of a transaction that sent nothing) is not sent at all. Everything else is SQLAlchemy's aiosqlite dialect.
Server-side cursors (``stream_results``) keep SQLAlchemy's own adapter.

``aiosqlite.Connection._execute`` (run a function in the connection's thread)
is private: aiosqlite is pinned, and ``tests/core/test_sqlite_driver.py``
holds this adapter to the same results as SQLAlchemy's.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

Result = tuple[Any, list[Any] | None, int, int | None]


def _execute(conn: sqlite3.Connection, operation: str, parameters: Any) -> Result:
    """In the connection's thread: the whole statement, and what is asked of its cursor afterwards."""
    cursor = conn.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, operation: str, seq_of_parameters: Any) -> Result:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        return cursor.description, None, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _begin_then(conn: sqlite3.Connection, begin: str, fn: Any, operation: str, parameters: Any) -> Result:
    """A transaction's ``BEGIN`` and its first statement, in one trip."""
    conn.execute(begin).close()
    result: Result = fn(conn, operation, parameters)
    return result


def _is_begin(operation: Any, parameters: Any) -> bool:
    return isinstance(operation, str) and not parameters and operation.lstrip()[:5].upper() == "BEGIN"


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one trip to the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")
    _awaitable_cursor_close = False  # nothing to close: the thread closed it

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._rows = collections.deque()
        self._soft_closed_memoized = EMPTY_DICT
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    def _run(self, fn: Any, operation: str, parameters: Any) -> Any:
        adapt: Any = self._adapt_connection
        begin, adapt._begin = adapt._begin, None
        try:
            conn: Any = self._connection
            # aiosqlite's own entry to its thread (``Connection._execute``): the statement in one trip
            if begin is None:
                result = await_(conn._execute(fn, conn._conn, operation, parameters))
            else:
                result = await_(conn._execute(_begin_then, conn._conn, begin, fn, operation, parameters))
            description, rows, self._rowcount, self._lastrowid = result
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._description = description
        self._rows = collections.deque(rows) if rows else collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if _is_begin(operation, parameters):
            # sent with the next statement; a transaction that sends none never began
            self._adapt_connection._begin = operation  # type: ignore[attr-defined]
            self._description, self._rowcount, self._lastrowid = None, -1, None
            self._rows = collections.deque()
            return
        self._run(_execute, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._run(_executemany, operation, seq_of_parameters)

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        return None

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection with one-trip cursors, and no trip to end no transaction."""

    __slots__ = ("_begin",)
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None  # a BEGIN waiting for the transaction's first statement

    def _open_transaction(self) -> bool:
        self._begin = None  # the transaction ends: a BEGIN still waiting never began one
        # sqlite3 reads this flag from any thread; the connection is idle whenever SQLAlchemy asks
        conn = self._connection._connection
        return conn is not None and conn.in_transaction

    def rollback(self) -> None:
        if self._open_transaction():
            super().rollback()

    def commit(self) -> None:
        if self._open_transaction():
            super().commit()

    def close(self) -> None:
        self._begin = None
        super().close()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (``create_async_engine(module=...)``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDbapi:
    return OneTripDbapi(aiosqlite, sqlite3)


__all__ = ["OneTripConnection", "OneTripCursor", "OneTripDbapi", "dbapi"]
