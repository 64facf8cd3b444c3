"""The one owner of every run task in this process.

Keeps ``run_id -> task``, forgets a run in the task's done-callback, cancels
through the run's ``CancellationToken``, serialises the runs of one
conversation, and on shutdown gives live runs a bounded grace before
cancelling them with reason ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable

import structlog

from app.runs.models import Run
from app.runtime.execution import RunExecution
from app.runtime.run.deps import RuntimeDeps

log = structlog.get_logger(__name__)


class RunManager:
    def __init__(self, deps: RuntimeDeps) -> None:
        self.deps = deps
        self._executions: dict[str, RunExecution] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        # makes "is this conversation busy?" and "start a run in it" one step
        self.admission = asyncio.Lock()
        # per principal, starts admitted under the lock whose rows are still being written
        self.pending: Counter[str] = Counter()
        self._closing = False
        # told when a run's task is over (distributed mode: its conversation's turn is free)
        self.on_finished: Callable[[str], None] | None = None
        # told, with its principal, when a run's task ended because the run parked
        self.on_parked: Callable[[str], None] | None = None

    @property
    def live_count(self) -> int:
        return len(self._tasks)

    def live_for(self, principal_id: str) -> int:
        """Live runs of a principal in this process: queued for their turn, running or awaiting input
        (a run is no longer live once its end is stored, even while its task winds down)."""
        return sum(1 for ex in self._executions.values() if ex.principal_id == principal_id and not ex.ended)

    def release_pending(self, principal_id: str) -> None:
        """A pending start's rows are written (the run is about to be submitted) or failed to be."""
        self.pending[principal_id] -= 1
        if self.pending[principal_id] <= 0:
            del self.pending[principal_id]

    def is_live(self, run_id: str) -> bool:
        return run_id in self._tasks

    def live_ids(self) -> list[str]:
        return list(self._tasks)

    def is_finishing(self, run_id: str) -> bool:
        """The run is writing (or has written) its terminal event."""
        execution = self._executions.get(run_id)
        return execution is not None and execution.settling

    def live_in_conversation(self, conversation_id: str) -> list[str]:
        return [rid for rid, ex in self._executions.items() if ex.conversation_id == conversation_id]

    def submit(
        self,
        run: Run,
        flushed_seq: int,
        *,
        known_seq: int | None = None,
        new_conversation: bool = False,
        exact: bool = False,
    ) -> None:
        """Start ``run``'s task. ``flushed_seq``: what the channel may take as stored (``exact``: where the
        stored log ends). ``known_seq``: the run's last event, when the caller knows it.
        ``new_conversation``: the run's request created its conversation (no history, no saved state)."""
        if self._closing:
            raise RuntimeError("the run manager is shutting down")
        self.deps.bus.open(run.id, flushed_seq, exact=exact)
        execution = RunExecution(self.deps, run, known_seq=known_seq, new_conversation=new_conversation)
        if run.cancel_requested is not None:
            execution.request_cancel(run.cancel_requested)  # asked for while it waited in the queue
        turn = self._turns.setdefault(run.conversation_id, asyncio.Lock())
        if self.on_parked is not None:
            on_parked, principal = self.on_parked, run.principal_id
            execution.on_parked = lambda: on_parked(principal)
        task = asyncio.create_task(execution.execute(turn), name=f"run:{run.id}")
        self._executions[run.id] = execution
        self._tasks[run.id] = task
        task.add_done_callback(lambda t: self._forget(run.id, run.conversation_id, t, execution))

    def _forget(self, run_id: str, conversation_id: str, task: asyncio.Task[None], execution: RunExecution) -> None:
        if self._tasks.get(run_id) is task:  # not a later execution of the run (a parked run resumed)
            self._executions.pop(run_id, None)
            self._tasks.pop(run_id, None)
        if not self.live_in_conversation(conversation_id):
            self._turns.pop(conversation_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("run_task_error", run_id=run_id, exc_info=task.exception())
        if self.on_finished is not None:
            self.on_finished(run_id)

    def cancel(self, run_id: str, reason: str = "cancelled") -> bool:
        """Ask a live run to stop; False when it is not live in this process (or has just parked)."""
        execution = self._executions.get(run_id)
        if execution is None or execution.parked:
            return False
        execution.request_cancel(reason)
        return True

    def provide_input(self, run_id: str, request_id: str, content: str) -> bool:
        """Answer a live run's input request; False when the run is not live in this process."""
        execution = self._executions.get(run_id)
        if execution is None:
            return False
        return execution.provide_input(request_id, content)

    async def wait(self, run_id: str, within: float | None = None) -> bool:
        """Wait for a live run's task to end; True when it has (or was not live)."""
        task = self._tasks.get(run_id)
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=within)
        return bool(done)

    async def shutdown(self, grace: float) -> None:
        self._closing = True
        tasks = set(self._tasks.values())
        if not tasks:
            return
        log.info("runs_draining", live=len(tasks), grace_s=grace)
        _, pending = await asyncio.wait(tasks, timeout=grace) if grace > 0 else (set(), tasks)
        for run_id, execution in list(self._executions.items()):
            if self._tasks.get(run_id) in pending:
                execution.request_cancel("shutdown")
        if pending:
            _, pending = await asyncio.wait(pending, timeout=5)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
