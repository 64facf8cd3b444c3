"""Settles what a previous process left behind: queued runs start again, running ones resume or fail.

A run that was executing when its process died resumes when it asked for ``retries`` and has one
left: ``run.requeued`` (``server_restarted``) is written, naming the messages it had begun to stream
and never completed, and the run is executed again from its last whole turn (``RunExecution``).
Otherwise it ends ``failed`` with ``server_restarted`` (its committed messages stay, and the next run
of its conversation continues from them: see ``lost.py``). A queued run never started, so it is
simply started now. A parked run (``parking.py``) was held by no process: it stays parked, or,
answered before the restart, is started again to resume.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.runs.models import Run
from app.runs.repository import ParkedRepository, RunEventRepository, RunRepository
from app.runtime.lost import end_lost_run, requeue_lost
from app.runtime.manager import RunManager

log = structlog.get_logger(__name__)


async def recover_runs(sessionmaker: async_sessionmaker[AsyncSession], manager: RunManager) -> None:
    requeue: list[tuple[Run, int]] = []
    async with sessionmaker() as session:
        runs = RunRepository(session)
        events = RunEventRepository(session)
        parked = ParkedRepository(session)
        for run in await runs.unfinished():
            last = await events.max_seq(run.id)
            row = await parked.get(run.id) if run.status in ("awaiting_input", "queued") else None
            if row is not None and row.answer is None:
                continue  # parked: it waits on, held by nobody
            if run.status == "queued" and (last <= 1 or row is not None or run.started_at is not None):
                requeue.append((run, last))  # never started, answered while parked, or requeued
                continue
            if run.attempts < run.max_attempts and run.cancel_requested is None:
                requeued = await requeue_lost(session, run, last, utcnow(), reason="server_restarted")
                requeue.append((run, requeued.seq))
                continue
            await end_lost_run(
                session,
                run,
                last,
                utcnow(),
                code="server_restarted",
                message="The server stopped while the run was going.",
            )
            log.warning("run_settled_after_restart", run_id=run.id)
        await session.commit()
    for run, last in requeue:
        if run.started_at is not None:
            run.attempts = (run.attempts or 0) + 1  # taken again: one more attempt, as a claim counts one
        manager.submit(run, flushed_seq=last, exact=True)
        log.info("run_requeued_after_restart", run_id=run.id)
