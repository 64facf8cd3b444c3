"""Time-ordered, prefixed identifiers (``run_01JD...``).

Ordering by id is ordering by creation time, which is what cursor pagination
needs; the prefix tells a human what kind of thing an id names.
"""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"
