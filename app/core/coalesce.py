"""Lookups shared by the callers that arrive together, and never answered from before they arrived.

A burst of 50 new runs used to make 50 identical reads to check who is calling (is the server
open? whose key is this?), each a pooled connection and three trips to SQLite's thread, and
enough of them at once to open extra read connections. ``Coalesced`` shares them: a caller joins
the lookup that starts *next* for its key, never one already under way (that one may have read
before the caller arrived, and missed what the caller must see, such as a key created by the CLI
a moment ago); a lookup starts as soon as none for its key is under way. However many callers
arrive at once, at most two lookups run for them, and each caller's answer was read after it
arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    def __init__(self, lookup: Callable[[K], Awaitable[V]]) -> None:
        self._lookup = lookup
        self._running: dict[K, asyncio.Future[V]] = {}  # the lookup under way, per key
        self._next: dict[K, asyncio.Future[V]] = {}  # its followers' answer: the lookup after it

    async def __call__(self, key: K) -> V:
        if key not in self._running:
            answer = self._start(key)
        else:
            answer = self._next.get(key) or self._next.setdefault(key, asyncio.get_running_loop().create_future())
        # a caller that gives up leaves the lookup to the others
        return await asyncio.shield(answer)

    def _start(self, key: K, answer: asyncio.Future[V] | None = None) -> asyncio.Future[V]:
        task = asyncio.ensure_future(self._lookup(key))
        self._running[key] = task

        def done(task: asyncio.Future[V]) -> None:
            del self._running[key]
            if answer is not None and not answer.done():
                if task.cancelled():
                    answer.cancel()
                elif (error := task.exception()) is not None:
                    answer.set_exception(error)
                else:
                    answer.set_result(task.result())
            elif not task.cancelled():
                task.exception()  # retrieved: its callers, if any are left, have it
            followers = self._next.pop(key, None)
            if followers is not None:
                self._start(key, followers)

        task.add_done_callback(done)
        return task if answer is None else answer
