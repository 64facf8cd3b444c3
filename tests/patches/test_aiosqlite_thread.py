"""aiosqlite's entry to a connection's thread (app/patches/aiosqlite_thread.py): a function runs there,
on the connection's sqlite3 connection, as one trip."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

import aiosqlite
import pytest

from app.patches.aiosqlite_thread import run_in_thread, sqlite_connection


def where(conn: sqlite3.Connection, sql: str) -> tuple[int, list[tuple[int]]]:
    return threading.get_ident(), conn.execute(sql).fetchall()


async def test_a_function_runs_in_the_connections_thread_on_its_connection(tmp_path: Path, trips: Counter[str]) -> None:
    async with aiosqlite.connect(tmp_path / "a.db") as connection:
        thread, rows = await run_in_thread(connection, where, "SELECT 1")
        assert rows == [(1,)] and thread != threading.get_ident()
        assert trips == Counter({"where": 1})
        inner = sqlite_connection(connection)
        assert isinstance(inner, sqlite3.Connection) and not inner.in_transaction
    assert sqlite_connection(connection) is None
    with pytest.raises(ValueError, match="connection"):
        await run_in_thread(connection, where, "SELECT 1")
