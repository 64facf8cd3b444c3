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

A write whose caller needs no answer from it can go further: executed with
the ``DEFER_WRITE`` execution options (the event recorder's event rows and the
rows they change), it waits, and goes in one trip with the transaction's next
statement or its commit. A batch of events and the rows they change is then
one trip, its ``BEGIN`` and ``COMMIT`` included. Such a write reports no row
count (-1) and no last row id, and a failing one says so at the next trip, at
the latest the commit, which fails and rolls the whole transaction back as
before. A rollback drops what was never sent. Other dialects ignore the option.

A reader's transaction of one statement can be one trip too: executed with
``SINGLE_READ`` as the first statement of a reader's transaction, the read goes
without the ``BEGIN DEFERRED`` (a lone ``SELECT`` is a transaction of its own in
SQLite), so no transaction is left open and its end is not sent. The callers are
the per-request key checks (``app/auth``). A writer's ``BEGIN IMMEDIATE`` is
never dropped, and other dialects ignore the option.

What this touches of aiosqlite's and SQLAlchemy's internals is in
``app/patches/aiosqlite_thread.py`` and ``app/patches/sqlalchemy_aiosqlite.py``;
``tests/core/test_sqlite_driver.py`` holds this adapter to the same results as
SQLAlchemy's. ``SWARM_PATCHES_OFF=aiosqlite_thread`` (a measuring aid) gives the
dialect SQLAlchemy's own adapter instead; the execution options are then ignored.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy import Engine, event

from app.patches import is_off
from app.patches.aiosqlite_thread import run_in_thread, sqlite_connection
from app.patches.sqlalchemy_aiosqlite import (
    EMPTY_DICT,
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_dbapi_connection,
    await_,
)

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


Step = tuple[Any, str, Any]  # (_execute or _executemany, operation, parameters)


def _steps(conn: sqlite3.Connection, begin: str | None, steps: list[Step], commit: bool) -> list[Result]:
    """In the connection's thread: a ``BEGIN`` if one waits, statements in order, then a commit if asked."""
    if begin is not None:
        conn.execute(begin).close()
    try:
        results = [fn(conn, operation, parameters) for fn, operation, parameters in steps]
        if commit:
            conn.commit()
    except BaseException:
        # a commit that fails ends its transaction (SQLAlchemy then sends no rollback): undo it here
        if commit and conn.in_transaction:
            conn.rollback()
        raise
    return results


def _is_begin(operation: Any, parameters: Any) -> bool:
    return isinstance(operation, str) and not parameters and operation.lstrip()[:5].upper() == "BEGIN"


DEFER_WRITE = {"defer_write": True}  # execution options: the write may wait for the next trip
# execution options: the read is its reader transaction's only statement (no BEGIN, so no end either)
SINGLE_READ = {"single_read": True}


def _deferrable(cursor: Any, context: Any) -> bool:
    """Executed with ``DEFER_WRITE``, and an INSERT, UPDATE or DELETE with nothing to read back."""
    return (
        context.execution_options.get("defer_write", False)
        and isinstance(cursor, OneTripCursor)
        and context.is_crud
        and not getattr(context.compiled, "effective_returning", None)
    )


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """SQLAlchemy's ``do_execute`` event: a write executed with ``DEFER_WRITE`` waits; a read executed
    with ``SINGLE_READ`` first in a reader's transaction goes without its ``BEGIN``."""
    if _deferrable(cursor, context):
        cursor.defer(_execute, statement, parameters)
        return True
    if context.execution_options.get("single_read", False) and isinstance(cursor, OneTripCursor):
        connection: OneTripConnection = cursor._adapt_connection  # type: ignore[assignment]
        connection.single_read()
    return False


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    if _deferrable(cursor, context):
        cursor.defer(_executemany, statement, parameters)
        return True
    return False


def configure(engine: Engine) -> None:
    """Let writes executed with ``DEFER_WRITE`` wait on ``engine`` (a sync engine of this adapter)."""
    event.listen(engine, "do_execute", _do_execute)
    event.listen(engine, "do_executemany", _do_executemany)


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
        adapt: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        result = adapt._trip((fn, operation, parameters))
        assert result is not None
        description, rows, self._rowcount, self._lastrowid = result
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

    def defer(self, fn: Any, operation: str, parameters: Any) -> None:
        """Send this write with the transaction's next trip; it reports no counts."""
        self._adapt_connection._deferred.append((fn, operation, parameters))  # type: ignore[attr-defined]
        self._description, self._rowcount, self._lastrowid = None, -1, None
        self._rows = collections.deque()

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        return None

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite connection with one-trip cursors, and no trip to end no transaction."""

    __slots__ = ("_begin", "_deferred")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None  # a BEGIN waiting for the transaction's first statement
        self._deferred: list[Step] = []  # writes waiting for the next trip (``DEFER_WRITE``)

    def begin_with_next(self, statement: str) -> None:
        """Begin a transaction with ``statement`` (a ``BEGIN``), sent with the transaction's first trip."""
        self._begin = statement

    def single_read(self) -> None:
        """The next statement is its read transaction's only one: it goes alone, as SQLite's own
        transaction, and leaves none open, so there is no end to send (one trip, not two). Only a
        reader's ``BEGIN DEFERRED`` is dropped: a writer's ``BEGIN IMMEDIATE`` stays."""
        if self._begin is not None and not self._deferred and self._begin.upper().endswith("DEFERRED"):
            self._begin = None

    def _trip(self, last: Step | None, *, commit: bool = False) -> Result | None:
        """One trip to the thread: the waiting ``BEGIN``, the deferred writes, ``last``, a commit."""
        begin, self._begin = self._begin, None
        deferred, self._deferred = self._deferred, []
        conn: Any = self._connection  # aiosqlite's Connection
        try:
            if begin is None and not deferred and not commit:
                assert last is not None
                result: Result = await_(run_in_thread(conn, last[0], last[1], last[2]))
                return result
            steps = [*deferred, last] if last is not None else deferred
            results = await_(run_in_thread(conn, _steps, begin, steps, commit))
        except Exception as error:
            self._handle_exception(error)
        return results[-1] if last is not None else None

    def _end(self) -> bool:
        """The transaction ends: True when the connection has one open in SQLite."""
        self._begin = None  # a BEGIN still waiting never began one
        self._deferred = []  # writes never sent: nothing to undo
        # sqlite3 reads this flag from any thread; the connection is idle whenever SQLAlchemy asks
        aio: Any = self._connection
        conn = sqlite_connection(aio)
        return conn is not None and conn.in_transaction

    def rollback(self) -> None:
        if self._end():
            super().rollback()

    def commit(self) -> None:
        if self._deferred:
            self._trip(None, commit=True)  # the writes and their commit in one trip
        elif self._end():
            super().commit()
        self._end()

    def close(self) -> None:
        self._end()
        super().close()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (``create_async_engine(module=...)``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI module for ``create_async_engine(module=...)``: this adapter, unless switched off."""
    if is_off("aiosqlite_thread"):
        return AsyncAdapt_aiosqlite_dbapi(aiosqlite, sqlite3)
    return OneTripDbapi(aiosqlite, sqlite3)


__all__ = ["DEFER_WRITE", "SINGLE_READ", "OneTripConnection", "OneTripCursor", "OneTripDbapi", "configure", "dbapi"]
