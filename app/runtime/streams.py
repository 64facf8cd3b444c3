"""Replay then follow: every event of a run after a given seq, exactly once, in order.

The order of steps is what makes it gap-free: subscribe to the live channel
first, then take the not-yet-stored events, then read the database for what
comes before those. Any event published before the subscription is in one of
the two; any event after it arrives on the subscription. Seq numbers remove
the overlap. A watcher that falls behind its bounded buffer is told
(``StreamLagged``) and re-attached from storage, at its own pace.

Every read of the database is a short session of its own, retried with a
backoff while the database cannot be reached (a PostgreSQL restart), for
``retry_for_s``; past that the stream ends with ``StreamClosing`` (reason
``storage_unavailable``) and its last seq, to be resumed, never with an
exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import structlog
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.envelope import Envelope
from app.core.vocabulary import TERMINAL_STATUSES
from app.runs.models import Run
from app.runs.repository import RunEventRepository
from app.runtime.bus import EventBus, Subscription
from app.runtime.redis_bus import RedisStreams

log = structlog.get_logger(__name__)

PAGE = 500
READ_RETRY_S = 5.0  # how long a stream rides out an unreachable database (SWARM_STORAGE_RETRY_S's default)
READ_BACKOFF_MAX_S = 1.0
# how often a watcher of a parked run looks at storage on its own (it is woken when the run changes here)
IDLE_RECHECK_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamLagged:
    """Not an event: the watcher fell behind and was re-attached after ``last_seq``."""

    last_seq: int


@dataclass(frozen=True, slots=True)
class StreamClosing:
    """Not an event: the stream ends early; resume after ``last_seq`` (on another server, or once the
    database is back)."""

    last_seq: int
    reason: Literal["shutdown", "storage_unavailable"] = "shutdown"


class StorageUnreachable(Exception):
    """The database could not be read for the whole of ``retry_for_s``."""


def _unreachable(exc: BaseException) -> bool:
    """An error of the database's reachability (down, restarting, a connection cut), not of the read."""
    if isinstance(exc, OSError | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        # 08: connection exceptions; 57P01-03: shut down by an administrator, crashed, starting up
        return exc.connection_invalidated or state.startswith("08") or state in ("57P01", "57P02", "57P03")
    return False


async def _ride_out(read: Callable[[], Awaitable[T]], retry_for_s: float) -> T:
    """``read()``, again with a backoff while the database is unreachable; ``StorageUnreachable`` once
    ``retry_for_s`` has gone by."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for_s
    delay = 0.05
    while True:
        try:
            return await read()
        except Exception as exc:
            if not _unreachable(exc):
                raise
            if loop.time() + delay > deadline:
                raise StorageUnreachable(f"{type(exc).__name__}: {exc}") from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, READ_BACKOFF_MAX_S)


async def _read_run(sessionmaker: async_sessionmaker[AsyncSession], run_id: str, retry_for_s: float) -> Run | None:
    async def read() -> Run | None:
        async with sessionmaker() as session:
            return await session.get(Run, run_id)

    return await _ride_out(read, retry_for_s)


async def stored_pages(
    sessionmaker: async_sessionmaker[AsyncSession],
    run_id: str,
    after: int,
    *,
    below: int | None = None,
    retry_for_s: float = READ_RETRY_S,
) -> AsyncIterator[list[Envelope]]:
    """Stored events after ``after`` (and before ``below``), a page per short session."""
    while True:

        async def page(after: int = after) -> tuple[list[Envelope], bool]:
            async with sessionmaker() as session:
                return await RunEventRepository(session).after(run_id, after, limit=PAGE, below=below)

        events, last = await _ride_out(page, retry_for_s)
        if events:
            yield events
        if last or not events:
            return
        after = events[-1].seq


class _Cursor:
    """Where a watcher is: the last seq it got, and whether that was the run's terminal event."""

    __slots__ = ("done", "last")

    def __init__(self, after: int) -> None:
        self.last = after
        self.done = False

    def take(self, events: list[Envelope]) -> list[Envelope]:
        """The events after ``last``, up to and including a terminal one."""
        out: list[Envelope] = []
        for env in events:
            if env.seq > self.last:
                out.append(env)
                self.last = env.seq
                if env.terminal:
                    self.done = True
                    break
        return out


async def _stored(
    sessionmaker: async_sessionmaker[AsyncSession],
    run_id: str,
    cursor: _Cursor,
    *,
    below: int | None = None,
    retry_for_s: float = READ_RETRY_S,
) -> AsyncIterator[list[Envelope]]:
    """The stored events after the cursor (and before ``below``), taken through it, up to a terminal one."""
    async for page in stored_pages(sessionmaker, run_id, cursor.last, below=below, retry_for_s=retry_for_s):
        if out := cursor.take(page):
            yield out
        if cursor.done:
            return


async def _follow_local(
    sub: Subscription, cursor: _Cursor
) -> AsyncIterator[list[Envelope] | StreamLagged | StreamClosing]:
    """A run live in this process, from its channel, until it ends, the watcher lags, or the channel closes."""
    while True:
        if out := cursor.take(await sub.next_batch()):
            yield out
        if cursor.done:
            return
        if sub.lagged:
            yield StreamLagged(cursor.last)
            return
        if sub.moved:
            return  # the run parked: its watcher reads on from storage, unannounced
        if sub.closed:
            yield StreamClosing(cursor.last)
            return


async def follow_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: EventBus,
    run_id: str,
    after: int,
    *,
    remote: RedisStreams | None = None,
    poll_s: float = 0.5,
    known: list[Envelope] | None = None,
    retry_for_s: float = READ_RETRY_S,
) -> AsyncIterator[list[Envelope] | StreamLagged | StreamClosing]:
    """Every event after ``after``, in order, in the batches they come in (a watcher writes a batch at once).

    ``remote``: the Redis run streams (distributed mode), for runs that are not live in this process.
    ``known``: the run's first events, already in hand (the request that created the run wrote them).
    ``retry_for_s``: how long a read rides out an unreachable database before the stream closes.
    """
    cursor = _Cursor(after)
    # closed with this generator, so that its subscription is let go at once
    items = _follow_batches(sessionmaker, bus, run_id, cursor, remote, poll_s, known, retry_for_s)
    try:
        async with contextlib.aclosing(items):
            async for item in items:
                yield item
    except StorageUnreachable as exc:
        log.warning(
            "stream_storage_unreachable", run_id=run_id, last_seq=cursor.last, retried_s=retry_for_s, error=str(exc)
        )
        yield StreamClosing(cursor.last, "storage_unavailable")


# A run live here whose stored log ends at or before the watcher's cursor is not read from storage: a run
# the request just created (``known``), or one that resumed here while its watchers waited (its channel
# knows exactly where its stored log ends). A channel opened with a lower bound only (a claimed retry,
# whose earlier attempts' events are stored) is read from storage past the first pass.
async def _follow_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: EventBus,
    run_id: str,
    cursor: _Cursor,
    remote: RedisStreams | None,
    poll_s: float,
    known: list[Envelope] | None,
    retry_for_s: float,
) -> AsyncGenerator[list[Envelope] | StreamLagged | StreamClosing, None]:
    if known and (out := cursor.take(known)):
        yield out
        if cursor.done:
            return
    while True:
        sub, unstored = bus.subscribe(run_id)
        # not live here (embedded): woken when it is, or when its log changes, from before any read
        idle = bus.idle(run_id) if sub is None and remote is None else None
        try:
            below = unstored[0].seq if unstored else None
            # nothing stored past the watcher's cursor (``stored_end``): the rest is in `unstored` or to come
            end = bus.stored_end(run_id) if not known else bus.flushed_seq(run_id)
            if not (sub is not None and end is not None and end <= cursor.last):
                async for out in _stored(sessionmaker, run_id, cursor, below=below, retry_for_s=retry_for_s):
                    yield out
            if cursor.done:
                return
            if out := cursor.take(unstored):
                yield out
            if cursor.done:
                return
            known = None
            if sub is None and remote is not None:
                # distributed mode: the run executes elsewhere (or not yet): follow its Redis stream,
                # until it ends, or until this process claims it (then the local bus serves it)
                async for item in _follow_remote(sessionmaker, bus, remote, run_id, cursor, poll_s, retry_for_s):
                    yield item
                if cursor.done or bus.draining or not bus.is_open(run_id):
                    return
                continue
            if sub is None:
                rest = await _not_live_here(sessionmaker, run_id, cursor, idle, poll_s, retry_for_s)
                if rest is None:
                    continue  # it goes on: look again
                for out in rest:
                    yield out
                return
            async for news in _follow_local(sub, cursor):
                yield news
            if cursor.done or not (sub.lagged or sub.moved):
                return
            # the watcher fell behind (or the run parked) and its subscription was dropped: read on from storage
        finally:
            if sub is not None:
                sub.close()
            if idle is not None:
                bus.forget_idle(run_id, idle)


async def _not_live_here(
    sessionmaker: async_sessionmaker[AsyncSession],
    run_id: str,
    cursor: _Cursor,
    idle: asyncio.Event | None,
    poll_s: float,
    retry_for_s: float,
) -> list[list[Envelope]] | None:
    """A run not live in this process (embedded): finished, and the rest of its stored log is returned;
    or parked (this process resumes or settles it, and wakes its watchers through ``idle``; they look
    again now and then too), and None once it may have changed."""
    run = await _read_run(sessionmaker, run_id, retry_for_s)
    if run is None or run.status in TERMINAL_STATUSES:
        # a terminal run whose terminal event was written after our read
        return [out async for out in _stored(sessionmaker, run_id, cursor, retry_for_s=retry_for_s)]
    within = max(poll_s, IDLE_RECHECK_S) if run.status == "awaiting_input" else poll_s
    if idle is None:
        await asyncio.sleep(within)
        return None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await idle.wait()
    return None


async def _follow_remote(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: EventBus,
    remote: RedisStreams,
    run_id: str,
    cursor: _Cursor,
    poll_s: float,
    retry_for_s: float,
) -> AsyncIterator[list[Envelope] | StreamClosing]:
    """After the stored events: the run's Redis stream, from the cursor on, until its terminal event
    (or until the run is live in this process: the caller then re-attaches to the local bus).

    The database holds a prefix of the run's events (the recorder writes in order) and the stream holds
    all of them while the run is live, so stored-then-stream misses nothing; seqs drop the overlap. A
    stream that starts past the cursor (expired, or the run was started before this stream began) is
    bridged from the database. A watcher pulls at its own pace, so it never lags here.
    """
    block_s = max(poll_s, 1.0)
    while True:
        if bus.draining:
            yield StreamClosing(cursor.last)
            return
        if bus.is_open(run_id):
            return
        read = asyncio.ensure_future(remote.read(run_id, cursor.last, block_s=block_s))
        drained = asyncio.ensure_future(bus.drained.wait())
        try:
            await asyncio.wait({read, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            if not read.done():
                read.cancel()
        if not read.done() or read.cancelled():
            yield StreamClosing(cursor.last)
            return
        try:
            events = read.result()
        except (RedisError, OSError):
            # Redis is away: the run goes on (its end reaches the database); look again shortly
            events = []
            await asyncio.sleep(poll_s)
        if events and events[0].seq > cursor.last + 1:
            async for out in _stored(sessionmaker, run_id, cursor, below=events[0].seq, retry_for_s=retry_for_s):
                yield out
            if cursor.done:
                return
        if out := cursor.take(events):
            yield out
        if cursor.done or bus.is_open(run_id):
            return
        if not events:
            # quiet for a while: the run may have ended with its stream gone (or written elsewhere)
            run = await _read_run(sessionmaker, run_id, retry_for_s)
            if run is None or run.status in TERMINAL_STATUSES:
                async for out in _stored(sessionmaker, run_id, cursor, retry_for_s=retry_for_s):
                    yield out
                if run is None or cursor.done:
                    return
                # terminal in the database, its event not there yet (a write in flight): look again


async def follow(
    sessionmaker: async_sessionmaker[AsyncSession],
    bus: EventBus,
    run_id: str,
    after: int,
    *,
    remote: RedisStreams | None = None,
    poll_s: float = 0.5,
    retry_for_s: float = READ_RETRY_S,
) -> AsyncIterator[Envelope | StreamLagged | StreamClosing]:
    """``follow_batches``, one event at a time."""
    async for item in follow_batches(
        sessionmaker, bus, run_id, after, remote=remote, poll_s=poll_s, retry_for_s=retry_for_s
    ):
        if isinstance(item, list):
            for env in item:
                yield env
        else:
            yield item
