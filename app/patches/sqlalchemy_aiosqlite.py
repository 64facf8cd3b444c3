"""SQLAlchemy's aiosqlite adapter classes, which the one-trip SQLite adapter subclasses.

Written for SQLAlchemy 2.1.9 (internal classes imported, and their private attributes relied on).
It goes with ``aiosqlite_thread``: ``SWARM_PATCHES_OFF=aiosqlite_thread`` leaves the one-trip
adapter out, and SQLAlchemy's own adapter is used as it is.

``OneTripCursor``, ``OneTripConnection`` and ``OneTripDbapi`` (``app/core/sqlite_driver.py``) are
SQLAlchemy's adapter with each statement made one trip to the connection's thread. They are
subclasses of undocumented classes and rely on what these hold: the cursor's ``_adapt_connection``,
``_connection``, ``_cursor``, ``_rows``, ``_soft_closed_memoized`` and ``_awaitable_cursor_close``
(set up by hand: the stock ``__init__`` would make a cursor, a trip), the connection's
``_connection``, ``_cursor_cls`` and ``_handle_exception``, and ``await_``, SQLAlchemy's bridge from
its synchronous side into the event loop. ``tests/core/test_sqlite_driver.py`` holds the adapter
to the same answers and errors as SQLAlchemy's own, statement by statement; docs/performance.md,
sections 11, 14, 15 and 19, has what it bought.
"""

from __future__ import annotations

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

__all__ = [
    "EMPTY_DICT",
    "AsyncAdapt_aiosqlite_connection",
    "AsyncAdapt_aiosqlite_cursor",
    "AsyncAdapt_aiosqlite_dbapi",
    "AsyncAdapt_dbapi_connection",
    "await_",
]
