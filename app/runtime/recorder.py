"""Writes run events (and what they change) to the database with group commit.

One writer task serves every run: whatever has queued up since the last
commit goes into the next transaction. This keeps SQLite to a single writer,
turns thousands of deltas into a few statements, and never puts a database
write on the per-token path. A durable event is awaited (``commit``) and only
then published, so a watcher never sees a completed message that is not
stored; deltas are buffered without waiting (``record``).

A run's consecutive deltas of one message are stored as one row (``seq`` to
``seq_end``, expanded again on replay) and written with the run's next
durable event, or after ``DELTA_FLUSH_S``, whichever comes first. So the
stored log of a run is always a prefix of its events: a durable event is
never stored before the deltas that came ahead of it.

What an event changes besides its own row is either ``Rows``, executions of prepared
statements, or a callable on the transaction's connection (``Apply``, for a write that must read
its answer: a run's end checks that nobody settled it first). All executions of one statement in a
batch go to the database as one ``executemany``, so the rows of many runs (a burst's
``run.started`` updates, the messages of many runs) cost one statement each, not one per run.

A batch is written on a Core connection in one greenlet (``run_sync``): its statements and its
commit cost one switch into SQLAlchemy's synchronous side, not one each, and no ORM session is
made for it (together about a third of a transaction's CPU on the event loop, measured side by side).

A run executed under a lease (distributed mode: ``hold_lease``) is fenced: each transaction that
writes for it first locks its row and checks that the lease is still this executor's. If another
process swept the run meanwhile (this process was frozen past its lease), its rows are left out of
the transaction and its waiting writers get ``Superseded``: nothing it writes lands after the event
that settled it.

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
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection, Executable, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.envelope import Envelope
from app.core.repository import Execution
from app.core.sqlite_driver import DEFER_WRITE
from app.runs.repository import EVENT_INSERT, MAX_DELTA_SPAN, event_row, leases_held, packed_row
from app.runtime.bus import EventBus

Apply = Callable[[Connection], None]  # run in the batch's transaction, on its (synchronous) connection


@dataclass(frozen=True, slots=True)
class Rows:
    """Executions of prepared statements, run with the batch's other executions of the same statement
    (in queue order), before any ``Apply`` of the batch. The batch's statements run in the order it
    first meets them, so rows that refer to each other are listed parents first (a conversation, its
    run, the run's event)."""

    executions: tuple[Execution, ...]


Change = Apply | Rows

log = structlog.get_logger(__name__)

RECOVERY_POLL_S = 0.25  # while degraded: how often the database is tried again
MAX_BACKOFF_S = 1.0
DELTA_FLUSH_S = 0.2  # the longest a delta waits for its row
FLUSH_AT = 4096  # buffered deltas that trigger a write at once
MAX_BUFFERED = 200_000  # beyond this (the database far behind) deltas are dropped: replay detail only


class StorageError(RuntimeError):
    """The database refused or could not take a write."""


class Superseded(StorageError):
    """A run's end was already written by another process (its lease lapsed); no retry can change that."""


@dataclass(slots=True)
class _Item:
    env: Envelope | None
    apply: Change | None = None
    done: asyncio.Future[None] | None = field(default=None)
    deltas: list[Envelope] | None = None  # consecutive deltas of one message: one row
    flush: bool = False  # a request to write out the buffered deltas
    then: Envelope | None = None  # the run's next event, written in the same transaction
    run_id: str | None = None  # the run of a change that is not an event (a model call's record)

    @property
    def run(self) -> str | None:
        if self.env is not None:
            return self.env.run_id
        if self.deltas:
            return self.deltas[0].run_id
        return self.run_id


def _rows(item: _Item) -> list[dict[str, Any]]:
    """The event rows of an item: written first in its batch, before any ``Rows`` (whose statements
    go in the order the batch first meets them, so an event row among them could come before the
    row of a run created in the same batch)."""
    if item.then is not None:
        assert item.env is not None
        return [event_row(item.env), event_row(item.then)]
    row = _row(item)
    return [] if row is None else [row]


def _row(item: _Item) -> dict[str, Any] | None:
    if item.deltas:
        return packed_row(item.deltas)
    return event_row(item.env) if item.env is not None else None


def _permanent(exc: BaseException) -> bool:
    """A write that no retry can fix (the data is at fault, not the database's reachability)."""
    return isinstance(exc, IntegrityError | DataError | Superseded)


class EventRecorder:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        *,
        max_batch: int = 2000,
        retry_for_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=100_000)
        self._max_batch = max_batch
        self._retry_for_s = retry_for_s
        self._task: asyncio.Task[None] | None = None
        self._degraded = False
        self._deferred: list[_Item] = []  # terminal events to write once the database is back
        self._buffers: dict[str, list[list[Envelope]]] = {}  # run -> groups of unwritten deltas
        self._buffered = 0
        self._flush_armed = False
        self._flush_queued = False
        self._stopping = False
        self._leases: dict[str, tuple[str, int]] = {}  # run -> (worker id, attempt) it is executed under
        self.dropped_deltas = 0
        self.fenced = 0  # items left out because their run's lease was gone

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
        self._stopping = True
        await self._queue.put(None)
        await self._task
        self._task = None

    def record(self, env: Envelope) -> None:
        """Buffer a delta; it is written with its run's next durable event, or within ``DELTA_FLUSH_S``."""
        if self._buffered >= MAX_BUFFERED:
            # the database is far behind; dropping a delta loses only replay detail, never a message
            self.dropped_deltas += 1
            return
        groups = self._buffers.get(env.run_id)
        if groups is None:
            self._buffers[env.run_id] = [[env]]
        else:
            group = groups[-1]
            last = group[-1]
            if (
                last.seq + 1 == env.seq
                and len(group) < MAX_DELTA_SPAN
                and last.data.get("message_id") == env.data.get("message_id")
                and last.type == env.type
            ):
                group.append(env)
            else:
                groups.append([env])
        self._buffered += 1
        if self._buffered >= FLUSH_AT:
            self._request_flush()
        elif not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_later(DELTA_FLUSH_S, self._request_flush)

    def _request_flush(self) -> None:
        self._flush_armed = False
        self.flush_soon()

    def flush_soon(self) -> None:
        """Write the buffered deltas with the next batch, without waiting for ``DELTA_FLUSH_S``."""
        if self._buffered and not self._flush_queued:
            # a full queue is full of writes: the buffers go with the next durable events
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_Item(None, flush=True))
                self._flush_queued = True

    def _take(self, run_id: str | None) -> list[_Item]:
        """The buffered deltas of one run (or of all, for None), as items, in seq order."""
        if run_id is None:
            runs = list(self._buffers)
        elif run_id in self._buffers:
            runs = [run_id]
        else:
            return []
        items: list[_Item] = []
        for rid in runs:
            for group in self._buffers.pop(rid):
                self._buffered -= len(group)
                items.append(_Item(None, deltas=group))
        return items

    def hold_lease(self, run_id: str, worker_id: str, attempt: int) -> None:
        """Fence the run's writes from now on: they land only while it is held under this lease."""
        self._leases[run_id] = (worker_id, attempt)

    def release_lease(self, run_id: str) -> None:
        self._leases.pop(run_id, None)

    def write(self, apply: Change, run_id: str | None = None) -> None:
        """Queue a change that is not an event and that nobody waits for (model-call records)."""
        try:
            self._queue.put_nowait(_Item(None, apply, run_id=run_id))
        except asyncio.QueueFull:
            log.warning("recorder_queue_full")

    async def commit(self, env: Envelope | None, apply: Change | None = None, *, then: Envelope | None = None) -> None:
        """Write the event and apply its changes in one transaction; return once committed.

        ``then``: the run's next event, written in the same transaction (``apply`` holds what both
        change)."""
        if self._stopping:
            # queued behind the end of the writer's loop, it would never be written nor answered
            raise StorageError("the event recorder has stopped")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(env, apply, done, then=then))
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
            batch: list[_Item] = []
            if first is None:
                stopping = True
            else:
                self._add(batch, first)
            while not stopping and len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    break
                self._add(batch, item)
            if stopping:
                batch.extend(self._take(None))
            if batch:
                await self._write(batch)
        if self._deferred:
            await self._recover()  # a last chance before the process goes; else the next start settles them
            for item in self._deferred:
                log.error("run_end_not_stored", run_id=item.env and item.env.run_id)

    def _add(self, batch: list[_Item], item: _Item) -> None:
        if item.flush:
            self._flush_queued = False
            batch.extend(self._take(None))
            return
        if item.env is not None:
            # the deltas that came before a durable event are stored with it, never after it
            batch.extend(self._take(item.env.run_id))
        batch.append(item)

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
                    if len(batch) > 1:  # each item in a transaction of its own from here: slower, so say so
                        log.info("event_batch_split", items=len(batch), error=type(exc).__name__)
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
        if item.deltas is not None:
            self.dropped_deltas += len(item.deltas)
            return
        env = item.env
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
                async with self._engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    await conn.commit()
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
        leases = self._leases
        fenced = {leased: leases[leased] for item in batch if (leased := item.run) in leases} if leases else {}

        def write(conn: Connection) -> set[str]:
            # the fence first: the runs whose lease is gone are left out of the transaction
            lost = set(fenced) - leases_held(conn, fenced) if fenced else set()
            _execute(conn, [item for item in batch if item.run not in lost] if lost else batch)
            conn.commit()
            return lost

        async with self._engine.connect() as conn:
            lost = await conn.run_sync(write)
        flushed: dict[str, int] = {}
        for item in batch:
            if lost and item.run in lost:
                self._fence(item)
                continue
            last = item.deltas[-1] if item.deltas else (item.then or item.env)
            if last is not None:
                flushed[last.run_id] = max(flushed.get(last.run_id, 0), last.seq)
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
        for run_id, seq in flushed.items():
            self._bus.mark_flushed(run_id, seq)

    def _fence(self, item: _Item) -> None:
        """An item of a run another process settled: not written, and its writer is told."""
        self.fenced += 1
        if item.deltas is not None:
            self.dropped_deltas += len(item.deltas)
        if item.env is not None and (item.env.terminal or item.done is not None):
            log.warning("write_fenced", run_id=item.run, seq=item.env.seq, type=item.env.type)
        if item.done is not None and not item.done.done():
            item.done.set_exception(Superseded("the run's lease is gone: another process settled it"))


def _execute(conn: Connection, batch: list[_Item]) -> None:
    """A batch's statements: its event rows, then each prepared statement once, then the ``Apply``s."""
    rows = [row for item in batch for row in _rows(item)]
    statements: dict[int, tuple[Executable, list[dict[str, Any]]]] = {}  # by statement, first seen first
    for item in batch:
        if isinstance(item.apply, Rows):
            for stmt, params in item.apply.executions:
                statements.setdefault(id(stmt), (stmt, []))[1].append(params)
    # on SQLite the rows wait for the batch's next statement or its commit: one trip, BEGIN to COMMIT
    if rows:
        conn.execute(EVENT_INSERT, rows, execution_options=DEFER_WRITE)
    for stmt, params_list in statements.values():
        conn.execute(stmt, params_list, execution_options=DEFER_WRITE)
    for item in batch:
        if item.apply is not None and not isinstance(item.apply, Rows):
            item.apply(conn)
