"""Where runs execute, behind one interface: in this process, or in whichever process claims them.

The lifespan chooses one ``RunLauncher`` per app, once: ``EmbeddedLauncher`` without
``SWARM_REDIS_URL``, ``DistributedLauncher`` with it. The run service, the routers and the SSE path
ask it to store and start a run, cancel it, answer its input, wait for its end and say whether the
event bus answers; none of them asks which mode this is. A run live in this process is handled the
same way in both (its ``RunManager``); the modes differ in the rest:

- **Embedded.** Every run is this process's. A new run's rows go through the event recorder
  (SQLite's one writer) and its task starts as soon as they are written; a start in a new
  conversation is written after the admission lock, held meanwhile as a pending live run. At start,
  the runs a previous process left behind are settled (``recovery.py``).
- **Distributed.** A new run is stored ``queued`` by the request's session and an executor, maybe
  this process, claims it under a lease (``cluster.py``, ``queue.py``). A cancel or an input answer
  for a run executed elsewhere travels as a signal; its events are read from its Redis stream.

A parked run (``parking.py``) is nobody's: its answer or its cancel is written to the database by
whichever process gets it, and a sweeper in every process ends the ones whose input expired.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.envelope import Envelope
from app.core.errors import Unavailable
from app.core.repository import Execution, commit_inserts
from app.core.vocabulary import TERMINAL_STATUSES
from app.runs.models import Run
from app.runtime.bus import EventBus
from app.runtime.cluster import Cluster
from app.runtime.inputs import NotAwaitingInput, UnknownInputRequest
from app.runtime.manager import RunManager
from app.runtime.parking import ParkedRuns
from app.runtime.recorder import EventRecorder, Rows, StorageError
from app.runtime.recovery import recover_runs
from app.runtime.redis_bus import RedisStreams
from app.runtime.signals import SignalsUnavailable
from app.runtime.streams import StreamClosing, follow_batches

log = structlog.get_logger(__name__)

SWEEP_STOP_S = 5.0  # at shutdown, how long the parked-run sweeper may take to finish its sweep

# what is left of a launch once the admission lock is released
AfterAdmission = Callable[[], Awaitable[None]]


class RunLauncher(ABC):
    """This process's way of getting runs executed (see the module's docstring)."""

    def __init__(self, manager: RunManager, bus: EventBus, streams: RedisStreams | None, parked: ParkedRuns) -> None:
        self.manager = manager
        self.bus = bus
        # where the events of runs executed by other processes are; None: every run is this process's
        self.streams = streams
        self.parked = parked
        self._parked_sweeper: asyncio.Task[None] | None = None
        self._parked_poke = asyncio.Event()
        self._parked_stopping = False
        manager.on_parked = self._on_parked

    def _on_parked(self, principal_id: str) -> None:
        self._parked_poke.set()  # its deadline may be the nearest

    def parked_for(self, principal_id: str) -> int | None:
        """The principal's parked runs, when this process knows them all; None: count them in the database."""
        return None

    def _sweep_parked(self) -> None:
        """Start ending the parked runs whose input expired: at the nearest deadline, and at least every
        ``SWARM_PARKED_SWEEP_S`` (a run parked by another process, or before a restart)."""
        interval = self.manager.deps.settings.parked_sweep_s

        async def loop() -> None:
            while not self._parked_stopping:
                wait = interval
                try:
                    await self.parked.expire()
                    if (deadline := await self.parked.next_deadline()) is not None:
                        wait = min(wait, max((deadline - utcnow()).total_seconds(), 0.0))
                except Exception as exc:
                    log.warning("parked_sweep_failed", error=f"{type(exc).__name__}: {exc}")
                if self._parked_stopping:
                    return  # checked and cleared with no await between: a stop's poke is not missed
                self._parked_poke.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._parked_poke.wait()  # a run parked here: its deadline may be nearer

        self._parked_sweeper = asyncio.create_task(loop(), name="parked-sweeper")

    async def _stop_sweeping_parked(self) -> None:
        """Let the sweeper finish what it is doing, then stop. A sweep cancelled mid-query would leave
        the database driver's thread finishing it after the event loop has gone (aiosqlite then raises
        in that thread)."""
        task, self._parked_sweeper = self._parked_sweeper, None
        if task is None:
            return
        self._parked_stopping = True
        self._parked_poke.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), SWEEP_STOP_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def admission(self) -> asyncio.Lock:
        """Held while a start is admitted: "may it start?" and "store it" are one step per process."""
        return self.manager.admission

    # -- lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Begin executing runs (after the database is migrated and the recorder started)."""

    @abstractmethod
    async def stop(self, grace_s: float) -> None:
        """Stop taking runs, give the live ones ``grace_s`` to finish, then cancel them (``shutdown``)."""

    @abstractmethod
    async def bus_ready(self) -> bool:
        """The event bus answers (readiness)."""

    # -- starting a run --------------------------------------------------------------------------

    @abstractmethod
    def live_for(self, principal_id: str) -> int | None:
        """The principal's live runs, when this process knows them all; None: count them in the database."""

    @abstractmethod
    async def launch(
        self,
        session: AsyncSession,
        run: Run,
        rows: list[Execution],
        *,
        new_conversation: bool,
        unwritten: Callable[[], None],
    ) -> AfterAdmission:
        """Store an admitted run's ``rows`` (its conversation when new, the run, its ``run.queued``) and
        start it; called under ``admission``. Returns what is left to do once the lock is released.

        ``session``: the request's, which has read what the run needs. ``unwritten``: called when the
        rows of a start counted as admitted could not be written after all. Raises ``Unavailable``
        when they could not be written (nothing is).
        """

    # -- a run that exists -----------------------------------------------------------------------

    async def cancel(self, run_id: str, reason: str, *, settle_within: float = 0.0) -> None:
        """Ask a run to stop wherever it executes; with ``settle_within``, wait that long for it to end."""
        if self.manager.cancel(run_id, reason):
            if settle_within > 0:
                await self.manager.wait(run_id, within=settle_within)
            return
        if await self.parked.cancel(run_id, reason) is not None:
            return  # parked: settled here
        await self._cancel_elsewhere(run_id, reason, settle_within)
        # it may have parked as the cancel went out, its executor no longer holding it: settled here (and
        # should it park after this look, the parked-run sweeper ends it: its row says it was cancelled)
        await self.parked.cancel(run_id, reason)

    async def provide_input(self, run_id: str, request_id: str, content: str, *, status: str) -> None:
        """Hand a run the answer to its input request; raises ``NotAwaitingInput`` or
        ``UnknownInputRequest``. ``status``: the run's, as the caller read it."""
        if self.manager.provide_input(run_id, request_id, content):
            return
        if status == "awaiting_input" and (answered := await self.parked.answer(run_id, request_id, content)):
            await self._resume(*answered)
            return
        await self._input_elsewhere(run_id, request_id, content, status)

    async def wait_terminal(self, run_id: str) -> None:
        """Until the run's terminal event is out (and, for a run of this process, its task has ended)."""
        if self.manager.is_live(run_id):
            parked = await self._wait_here(run_id)
            if not parked:
                return
        # not live here, or it parked: its end comes from another process, a resume, or the sweeper
        await self._wait_elsewhere(run_id)

    async def _wait_here(self, run_id: str) -> bool:
        """Until the live run's task has ended: True when it left without its terminal event (it parked)."""
        ended = await self.bus.wait_terminal(run_id)
        await self.manager.wait(run_id)
        return not ended

    @abstractmethod
    async def _resume(self, run: Run, last_seq: int) -> None:
        """Have a parked run that was just answered (``queued`` again) executed."""

    @abstractmethod
    async def _cancel_elsewhere(self, run_id: str, reason: str, settle_within: float) -> None: ...

    @abstractmethod
    async def _input_elsewhere(self, run_id: str, request_id: str, content: str, status: str) -> None: ...

    @abstractmethod
    async def _wait_elsewhere(self, run_id: str) -> None: ...


class EmbeddedLauncher(RunLauncher):
    """One process: every run is this process's (``SWARM_REDIS_URL`` unset)."""

    def __init__(
        self,
        manager: RunManager,
        bus: EventBus,
        recorder: EventRecorder,
        sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        super().__init__(manager, bus, None, ParkedRuns(sessionmaker, self._stored_change))
        self.recorder = recorder
        self.sessionmaker = sessionmaker
        # every parked run is this process's to count: none parks or unparks elsewhere
        self._parked_count: Counter[str] = Counter()
        self.parked.on_unparked = self._unparked

    async def start(self) -> None:
        await recover_runs(self.sessionmaker, self.manager)
        self._parked_count.update(await self.parked.counts())
        self._sweep_parked()

    async def _stored_change(self, events: list[Envelope]) -> None:
        for env in events:  # a parked run's end, written here: its watchers read it from storage
            self.bus.notify(env.run_id)

    def _on_parked(self, principal_id: str) -> None:
        self._parked_count[principal_id] += 1
        super()._on_parked(principal_id)

    def _unparked(self, principal_id: str) -> None:
        self._parked_count[principal_id] -= 1
        if self._parked_count[principal_id] <= 0:
            del self._parked_count[principal_id]

    def parked_for(self, principal_id: str) -> int:
        return self._parked_count[principal_id]

    async def stop(self, grace_s: float) -> None:
        await self._stop_sweeping_parked()
        await self.manager.shutdown(grace_s)

    async def _resume(self, run: Run, last_seq: int) -> None:
        await self.manager.wait(run.id)  # the task that parked it may be winding down still
        run.attempts = (run.attempts or 0) + 1  # taken again: one more attempt, as a claim counts one
        self.manager.submit(run, flushed_seq=last_seq, known_seq=last_seq, exact=True)

    async def bus_ready(self) -> bool:
        return True  # the bus is in this process

    def live_for(self, principal_id: str) -> int:
        # every live run is this process's, or pending (admitted, its rows being written)
        return self.manager.live_for(principal_id) + self.manager.pending[principal_id]

    async def launch(
        self,
        session: AsyncSession,
        run: Run,
        rows: list[Execution],
        *,
        new_conversation: bool,
        unwritten: Callable[[], None],
    ) -> AfterAdmission:
        # what the request read (its team, its conversation) it read on SQLite's one write
        # connection, which the recorder needs: end that transaction first
        if session.in_transaction():
            await session.rollback()
        if not new_conversation:
            # in an existing conversation the next request's busy check must see this run, and the
            # conversation's runs start in the order they were asked
            await _whole(self._write_and_submit(run, rows, new_conversation=False, unwritten=unwritten))
            return _nothing
        # nobody else can name a conversation that is being created: its rows are written after the
        # lock, the start holding its slot as pending, so a burst of new runs does not commit in turn
        self.manager.pending[run.principal_id] += 1
        return lambda: _whole(self._write_and_submit(run, rows, new_conversation=True, unwritten=unwritten))

    async def _write_and_submit(
        self, run: Run, rows: list[Execution], *, new_conversation: bool, unwritten: Callable[[], None]
    ) -> None:
        """Write the run's rows, then start its task. A start in a new conversation holds a pending
        slot (written after the lock), given back here, with ``unwritten`` told when nothing was written."""
        try:
            await _stored(self._write(rows))
        except BaseException:
            if new_conversation:
                unwritten()
            raise
        finally:
            if new_conversation:
                self.manager.release_pending(run.principal_id)
        # no await since the slot was released: the run is live at once
        self.manager.submit(run, flushed_seq=1, known_seq=1, new_conversation=new_conversation, exact=True)

    async def _write(self, rows: list[Execution]) -> None:
        # without the request's session: the rows of runs started together are written in the
        # recorder's next transaction, one ``executemany`` per table (``Rows`` are executed statement
        # by statement in the order first seen, so the conversation comes before its run and the run
        # before its event)
        await self.recorder.commit(None, Rows(tuple(rows)))

    async def _cancel_elsewhere(self, run_id: str, reason: str, settle_within: float) -> None:
        return  # not live here: not live at all

    async def _input_elsewhere(self, run_id: str, request_id: str, content: str, status: str) -> None:
        raise _not_waiting(run_id, status)

    async def _wait_elsewhere(self, run_id: str) -> None:
        # not live: ended (its end is stored), or parked (its end, or its resume, is to come)
        deps = self.manager.deps
        async with deps.read_sessionmaker() as session:
            run = await session.get(Run, run_id)
        if run is None or run.status in TERMINAL_STATUSES:
            return
        async for item in follow_batches(deps.read_sessionmaker, self.bus, run_id, max(run.last_seq - 1, 0)):
            if isinstance(item, StreamClosing) or (isinstance(item, list) and item[-1].terminal):
                return


class DistributedLauncher(RunLauncher):
    """Several processes share the runs through the database and Redis (``SWARM_REDIS_URL``)."""

    def __init__(
        self,
        manager: RunManager,
        bus: EventBus,
        cluster: Cluster,
        read_sessionmaker: async_sessionmaker[AsyncSession],
    ) -> None:
        super().__init__(manager, bus, cluster.streams, ParkedRuns(manager.deps.sessionmaker, cluster.streams.write))
        self.cluster = cluster
        self.read_sessionmaker = read_sessionmaker

    async def start(self) -> None:
        # several processes share the database: lapsed leases, not a restart, tell a lost run
        await self.cluster.start(self.manager)
        self._sweep_parked()

    async def stop(self, grace_s: float) -> None:
        await self._stop_sweeping_parked()
        self.cluster.stop_claiming()
        await self.manager.shutdown(grace_s)
        await self.cluster.stop()

    async def _resume(self, run: Run, last_seq: int) -> None:
        await self.cluster.announce()  # queued again: an executor (maybe this process) claims it

    async def bus_ready(self) -> bool:
        return await self.cluster.ping()

    def live_for(self, principal_id: str) -> None:
        return None  # queued runs are in the database only

    async def launch(
        self,
        session: AsyncSession,
        run: Run,
        rows: list[Execution],
        *,
        new_conversation: bool,
        unwritten: Callable[[], None],
    ) -> AfterAdmission:
        # the live count is read from the database: the rows are written before the next request
        # reads it (an executor claims the run from there)
        await _stored(commit_inserts(session, rows))
        # queued in the database: an executor (maybe this process) claims it
        return self.cluster.announce

    async def _cancel_elsewhere(self, run_id: str, reason: str, settle_within: float) -> None:
        await self.cluster.cancel(run_id, reason)
        if settle_within > 0:
            await self._settled_within(run_id, settle_within)

    async def _settled_within(self, run_id: str, within: float) -> None:
        """Wait (a bounded while) for a run that another process executes to reach a terminal state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            async with self.read_sessionmaker() as session:
                run = await session.get(Run, run_id)
            if run is None or run.status in TERMINAL_STATUSES:
                return
            await asyncio.sleep(0.05)

    async def _input_elsewhere(self, run_id: str, request_id: str, content: str, status: str) -> None:
        if status in TERMINAL_STATUSES or status == "queued":
            raise _not_waiting(run_id, status)
        # executed by another process: it checks the request id and answers (``SignalsUnavailable``,
        # a 503, when Redis cannot carry the answer)
        verdict = await self.cluster.provide_input(run_id, request_id, content)
        if verdict is None:
            # nobody answered: the run has ended meanwhile, or its executor cannot hear (its listener is
            # reconnecting to Redis, or it was lost and its lease has not lapsed yet)
            status = await self._status_now(run_id) or status
            if status in TERMINAL_STATUSES:
                raise _not_waiting(run_id, status)
            raise SignalsUnavailable(
                f"No process executing run '{run_id}' answered; the answer was not delivered. Try again."
            )
        if not verdict.get("ok"):
            error = UnknownInputRequest if verdict.get("code") == UnknownInputRequest.code else NotAwaitingInput
            raise error(str(verdict.get("detail") or "The run is not waiting for that input."))

    async def _status_now(self, run_id: str) -> str | None:
        """The run's status as stored now; None when it cannot be read."""
        try:
            async with self.read_sessionmaker() as session:
                run = await session.get(Run, run_id)
        except (DBAPIError, OSError):
            return None
        return None if run is None else run.status

    async def _wait_elsewhere(self, run_id: str) -> None:
        # executed elsewhere (or not yet claimed): follow its stream to the end
        async for item in follow_batches(self.read_sessionmaker, self.bus, run_id, 1, remote=self.streams):
            if isinstance(item, StreamClosing) or (isinstance(item, list) and item[-1].terminal):
                return


def _not_waiting(run_id: str, status: str) -> NotAwaitingInput:
    return NotAwaitingInput(f"Run '{run_id}' is {status}, not waiting for input.")


async def _nothing() -> None:
    return None


async def _stored(write: Awaitable[None]) -> None:
    """Await a new run's rows being written, or raise ``Unavailable`` (nothing was)."""
    try:
        await write
    except (StorageError, OperationalError) as exc:
        raise Unavailable(
            "The database could not store the run, so it was not started; try again.",
            code="storage_unavailable",
            headers={"Retry-After": "1"},
        ) from exc


async def _whole(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end even when the request is cancelled meanwhile (its client went away):
    rows the database may already hold are never left without their run's task."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # the step goes on alone; what it raises is logged, not left unretrieved
        task.add_done_callback(_log_failure)
        raise


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("run_start_failed_after_cancel", error=repr(task.exception()))
