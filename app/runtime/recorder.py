"""Writes run events (and what they change) to the database with group commit.

One writer task serves every run: whatever has queued up since the last
commit goes into the next transaction. This keeps SQLite to a single writer,
turns thousands of deltas into a few statements, and never puts a database
write on the per-token path. A durable event is awaited (``commit``) and only
then published, so a watcher never sees a completed message that is not
stored; deltas are queued without waiting (``record``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.runs.models import RunEvent
from app.runtime.bus import EventBus
from app.runtime.envelope import Envelope

Apply = Callable[[AsyncSession], Awaitable[None]]

log = structlog.get_logger(__name__)


class StorageError(RuntimeError):
    """The database refused or could not take a write."""


@dataclass(slots=True)
class _Item:
    env: Envelope | None
    apply: Apply | None = None
    done: asyncio.Future[None] | None = field(default=None)


class EventRecorder:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], bus: EventBus, *, max_batch: int = 2000) -> None:
        self._sessionmaker = sessionmaker
        self._bus = bus
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=100_000)
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None

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

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
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

    async def _write(self, batch: list[_Item]) -> None:
        try:
            await self._write_all(batch)
        except Exception:
            # find the item at fault; the others still land
            for item in batch:
                try:
                    await self._write_all([item])
                except Exception as exc:
                    log.error("event_write_failed", run_id=item.env and item.env.run_id, exc_info=exc)
                    if item.done is not None and not item.done.done():
                        item.done.set_exception(StorageError("the database could not store the event"))

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
