"""Interrupting a task's wait on a model stream, without a timer or a future per token.

A stream is awaited once per token. ``asyncio.timeout`` around each wait arms and cancels a timer
per token, and AutoGen's ``CancellationToken.link_future`` needs a future (a task) per token and
keeps a callback per token until the run ends. Both end the same way: the waiting task is
cancelled, and the cancellation is turned into something else once caught. An ``Interrupt`` does
that with one timer or one callback per call: it cancels its task only while the task is marked
as waiting on the stream (so the cancellation always lands in that wait, never in the code the
stream yields to), and ``caught`` undoes it, as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from autogen_core import CancellationToken


class RunToken(CancellationToken):
    """A run's ``CancellationToken``, which forgets a linked future once the future is done.

    AutoGen's ``run_stream`` links every item it takes from the team's output queue to the token
    (every streamed chunk, on the fast token path too), and the stock token keeps each link, a
    closure over a finished task that holds the item, until the run ends: about 2 KB a chunk for
    the run's whole life, all of it old enough to burden every full garbage collection.
    """

    def __init__(self) -> None:
        super().__init__()
        self._linked: set[asyncio.Future[Any]] = set()

    def link_future(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        if self.is_cancelled():
            future.cancel()
        elif not future.done():
            self._linked.add(future)
            future.add_done_callback(self._linked.discard)
        return future

    def cancel(self) -> None:
        super().cancel()
        for future in list(self._linked):
            future.cancel()

    @property
    def linked(self) -> int:
        """Futures linked now (not done)."""
        return len(self._linked)


class Interrupt:
    __slots__ = ("_cancelling", "fired", "task", "waiting")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None, "an interrupt belongs to a task"
        self.task = task
        self.waiting = False  # set by the owner around each wait on the stream, and only there
        self.fired = False
        self._cancelling = task.cancelling()

    def _fire(self) -> None:
        if self.waiting and not self.fired:
            self.fired = True
            self.task.cancel()

    def caught(self) -> bool:
        """After a CancelledError: whether it was this interrupt's alone (then the task is no longer cancelling)."""
        if not self.fired:
            return False
        self.fired = False
        return self.task.uncancel() <= self._cancelling


class CancelLink(Interrupt):
    """A ``CancellationToken`` linked to one call: one callback for the call, not a future per chunk.

    ``cancelled`` tells the owner to stop before its next wait (the token fired while it was not
    waiting); a wait in progress is interrupted.
    """

    __slots__ = ("cancelled",)

    def __init__(self, token: CancellationToken | None) -> None:
        super().__init__()
        self.cancelled = False
        if token is not None:
            token.add_callback(self._cancel)  # called at once if the token is cancelled already

    def _cancel(self) -> None:
        self.cancelled = True
        self._fire()


class StallWatch(Interrupt):
    """A stream's longest wait for its next item, as one timer that is pushed back lazily.

    The timer checks at most every ``timeout_s`` whether the current wait has lasted that long;
    only then does it interrupt the wait, which the owner turns into ``TimeoutError``.
    """

    __slots__ = ("_handle", "_loop", "_timeout", "since")

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout_s
        self.since = 0.0
        self._handle = self._loop.call_at(self._loop.time() + timeout_s, self._check)

    def start(self) -> None:
        """A wait begins."""
        self.since = self._loop.time()
        self.waiting = True

    def _check(self) -> None:
        now = self._loop.time()
        if self.waiting and now - self.since >= self._timeout:
            self._fire()
            return
        self._handle = self._loop.call_at((self.since if self.waiting else now) + self._timeout, self._check)

    def close(self) -> None:
        self._handle.cancel()
