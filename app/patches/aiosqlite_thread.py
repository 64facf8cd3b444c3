"""aiosqlite's way into a connection's thread, for the one-trip SQLite adapter.

Written for aiosqlite 0.22.1 (private members used: ``Connection._execute``, ``Connection._conn``
and ``Connection._connection``). ``SWARM_PATCHES_OFF=aiosqlite_thread`` leaves the one-trip
adapter out (``app/core/sqlite_driver.py``: SQLAlchemy's own aiosqlite adapter then), to measure it.

aiosqlite runs each SQLite connection in a thread of its own, and every call it makes is a trip
there and back. ``Connection._execute(fn, *args)`` is its own entry to that thread: it queues
``fn(*args)`` and awaits the answer. Through it, the adapter sends a whole statement (cursor,
execute, rows, close), or a transaction's ``BEGIN``, writes and ``COMMIT``, as one function: one
trip where SQLAlchemy's adapter makes three or four per statement. When it came a burst's new run
made 16 trips instead of 43 (docs/performance.md, section 11; ``DEFER_WRITE`` and ``SINGLE_READ``,
sections 15 and 19, build on it). Measured off against on (section 21): a one-token run's server
CPU 27.3 ms without it against 17.3 with it, and its finish 29.9 ms after the request against 18.0
(W3, medians; both runs without it above all nine with it).
``tests/core/test_sqlite_driver.py`` holds the adapter to SQLAlchemy's own results and errors, and
counts its trips; ``tests/patches/test_aiosqlite_thread.py`` holds these two functions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")


def run_in_thread(connection: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
    """``fn(the sqlite3 connection, *args)`` in the connection's thread, as one trip (to be awaited)."""
    answer: Awaitable[T] = connection._execute(fn, connection._conn, *args)  # type: ignore[no-untyped-call]
    return answer


def sqlite_connection(connection: aiosqlite.Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection behind ``connection`` (None once closed); only some of its attributes,
    such as ``in_transaction``, may be read outside its thread, and only while it is idle."""
    return connection._connection
