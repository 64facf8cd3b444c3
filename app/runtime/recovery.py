"""Settles what a previous process left behind: queued runs start again, running ones fail.

A run that was executing when its process died cannot be resumed mid-turn;
it ends ``failed`` with ``server_restarted`` (its committed messages stay).
A queued run never started, so it is simply started now.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.runs.models import Run, RunEvent
from app.runs.repository import RunEventRepository, RunRepository
from app.runtime.envelope import usage_data
from app.runtime.manager import RunManager

log = structlog.get_logger(__name__)


async def recover_runs(sessionmaker: async_sessionmaker[AsyncSession], manager: RunManager) -> None:
    requeue: list[tuple[Run, int]] = []
    async with sessionmaker() as session:
        runs = RunRepository(session)
        events = RunEventRepository(session)
        for run in await runs.unfinished():
            last = await events.max_seq(run.id)
            if run.status == "queued" and last <= 1:
                requeue.append((run, last))
                continue
            now = utcnow()
            data: dict[str, Any] = {
                "status": "failed",
                "error": {
                    "code": "server_restarted",
                    "message": "The server stopped while the run was going.",
                },
                "usage": usage_data(run.prompt_tokens, run.completion_tokens),
                "duration_ms": 0,
            }
            session.add(RunEvent(run_id=run.id, seq=last + 1, type="run.failed", at=now, data=data))
            await runs.set_fields(
                run.id,
                status="failed",
                error_code="server_restarted",
                error_message=data["error"]["message"],
                finished_at=now,
                last_seq=last + 1,
            )
            log.warning("run_settled_after_restart", run_id=run.id)
        await session.commit()
    for run, last in requeue:
        manager.submit(run, flushed_seq=last)
        log.info("run_requeued_after_restart", run_id=run.id)
