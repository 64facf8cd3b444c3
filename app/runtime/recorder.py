"""Writes run events (and what they change) to the database with group commit.

One writer task serves every run: whatever has queued up since the last
commit goes into the next transaction. This keeps SQLite to a single writer,
turns thousands of deltas into a few statements, and never puts a database
write on the per-token path. A durable event is awaited (``commit``) and only
then published, so a watcher never sees a completed message that is not
stored; deltas are queued without waiting (``record``).

When the database cannot be reached, a batch is retried for ``retry_for_s``
(a restarting database or a failover costs a pause, not a run). Past that the
recorder is *degraded*: the waiting writers get ``StorageError`` (their runs
fail ``storage_error``), later writes fail at once instead of each waiting
again, and ``/readyz`` says so. Every transaction is whole or absent, so a
message is never stored without its event, nor the reverse. A run's terminal
event that could not be written is kept and written as soon as the database
answers again, so the run ends ``failed`` rather than staying ``running``
until a restart. Deltas that could not be written are dropped (replay detail;
their message is stored whole or not at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import insert, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.runs.models import RunEvent
from app.runtime.bus import EventBus
from app.runtime.envelope import Envelope

Apply = Callable[[AsyncSession], Awaitable[None]]

log = structlog.get_logger(__name__)

RECOVERY_POLL_S = 0.25  # while degraded: how often the database is tried again
MAX_BACKOFF_S = 1.0


class StorageError(RuntimeError):
    """The database refused or could not take a write."""


class Superseded(StorageError):
    """A run's end was already written by another process (its lease lapsed); no retry can change that."""


@dataclass(slots=True)
class _Item:
    env: Envelope | None
    apply: Apply | None = None
    done: asyncio.Future[None] | None = field(default=None)


def _permanent(exc: BaseException) -> bool:
    """A write that no retry can fix (the data is at fault, not the database's reachability)."""
    return isinstance(exc, IntegrityError | DataError | Superseded)


class EventRecorder:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        max_batch: int = 2000,
        retry_for_s: float = 5.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=100_000)
        self._max_batch = max_batch
        self._retry_for_s = retry_for_s
        self._task: asyncio.Task[None] | None = None
        self._degraded = False
        self._deferred: list[_Item] = []  # terminal events to write once the database is back
        self.dropped_deltas = 0

    @property
    def healthy(self) -> bool:
        """False while the database cannot take writes (or a run's end is not yet stored)."""
        return not self._degraded and not self._deferred

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="event-recorder")

    async def stop(self) -> None:
        """Write out everything queued, then end."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    def record(self, env: Envelope) -> None:
        """Queue an event whose write nobody waits for (deltas)."""
        try:
            self._queue.put_nowait(_Item(env))
        except asyncio.QueueFull:
            # the database is far behind; dropping a delta loses only replay detail, never a message
            self.dropped_deltas += 1
            log.warning("recorder_queue_full", run_id=env.run_id, seq=env.seq)

    def write(self, apply: Apply) -> None:
        """Queue a change that is not an event and that nobody waits for (model-call records)."""
        try:
            self._queue.put_nowait(_Item(None, apply))
        except asyncio.QueueFull:
            log.warning("recorder_queue_full")

    async def commit(self, env: Envelope | None, apply: Apply | None = None) -> None:
        """Write the event and apply its changes in one transaction; return once committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(env, apply, done))
        await done

    async def _next(self) -> _Item | None:
        if self.healthy:
            return await self._queue.get()
        while True:
            try:
                async with asyncio.timeout(RECOVERY_POLL_S):
                    return await self._queue.get()
            except TimeoutError:
                await self._recover()

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._next()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._write(batch)
        if self._deferred:
            await self._recover()  # a last chance before the process goes; else the next start settles them
            for item in self._deferred:
                log.error("run_end_not_stored", run_id=item.env and item.env.run_id)

    async def _write(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        # once degraded, fail at once: waiting out every batch would only hold every run up
        deadline = loop.time() + (0 if self._degraded else self._retry_for_s)
        delay = 0.05
        while True:
            try:
                await self._write_all(batch)
            except Exception as exc:
                if _permanent(exc):
                    break
                if loop.time() + delay > deadline:
                    if not self._degraded:
                        log.error("storage_degraded", error=type(exc).__name__, retried_s=self._retry_for_s)
                    self._degraded = True
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                await self._recovered()
                return
        # find the items at fault; the others still land
        for item in batch:
            try:
                await self._write_all([item])
            except Exception as exc:
                self._fail(item, exc)
            else:
                await self._recovered()

    def _fail(self, item: _Item, exc: BaseException) -> None:
        env = item.env
        if env is not None and not env.durable:
            self.dropped_deltas += 1
            return
        log.error("event_write_failed", run_id=env and env.run_id, seq=env and env.seq, error=type(exc).__name__)
        if env is not None and env.terminal and not _permanent(exc):
            self._deferred.append(_Item(env, item.apply))
        if item.done is not None and not item.done.done():
            if isinstance(exc, Superseded | IntegrityError):
                # the run's row or this seq was taken by another process: the run is not ours any more
                item.done.set_exception(Superseded("the run was settled by another process"))
            else:
                item.done.set_exception(StorageError("the database could not store the event"))

    async def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("storage_recovered", dropped_deltas=self.dropped_deltas)
        if self._deferred:
            await self._recover()

    async def _recover(self) -> None:
        """Try the database again: write the deferred run ends, or just ask it something."""
        try:
            if not self._deferred:
                async with self._sessionmaker() as session:
                    await session.execute(text("SELECT 1"))
                    await session.commit()
            while self._deferred:
                item = self._deferred[0]
                try:
                    await self._write_all([item])
                except Exception as exc:
                    if not _permanent(exc):
                        raise
                    log.error("run_end_not_stored", run_id=item.env and item.env.run_id, error=type(exc).__name__)
                else:
                    log.info("run_end_stored_late", run_id=item.env and item.env.run_id)
                self._deferred.pop(0)
        except Exception:
            return  # still unreachable; tried again on the next poll
        if self._degraded:
            self._degraded = False
            log.info("storage_recovered", dropped_deltas=self.dropped_deltas)

    async def _write_all(self, batch: list[_Item]) -> None:
        rows = [
            {"run_id": i.env.run_id, "seq": i.env.seq, "type": i.env.type, "at": i.env.at, "data": i.env.data}
            for i in batch
            if i.env is not None
        ]
        async with self._sessionmaker() as session:
            if rows:
                await session.execute(insert(RunEvent), rows)
            for item in batch:
                if item.apply is not None:
                    await item.apply(session)
            await session.commit()
        flushed: dict[str, int] = {}
        for item in batch:
            if item.env is not None:
                flushed[item.env.run_id] = max(flushed.get(item.env.run_id, 0), item.env.seq)
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
        for run_id, seq in flushed.items():
            self._bus.mark_flushed(run_id, seq)
