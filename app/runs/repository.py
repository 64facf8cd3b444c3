from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.repository import Page, Repository
from app.runs.models import Run, RunEvent

ACTIVE_STATUSES = ("queued", "running", "awaiting_input")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")


class RunRepository(Repository[Run]):
    model = Run
    label = "run"

    async def list_filtered(
        self,
        principal_id: str,
        *,
        limit: int,
        cursor: str | None,
        status: str | None = None,
        conversation_id: str | None = None,
        team_id: str | None = None,
    ) -> Page[Run]:
        stmt = self._owned(principal_id)
        if status is not None:
            stmt = stmt.where(Run.status == status)
        if conversation_id is not None:
            stmt = stmt.where(Run.conversation_id == conversation_id)
        if team_id is not None:
            stmt = stmt.where(Run.team_id == team_id)
        return await self.page(stmt, limit=limit, cursor=cursor)

    async def active_in_conversation(self, conversation_id: str) -> list[Run]:
        rows = await self.session.scalars(
            select(Run).where(Run.conversation_id == conversation_id, Run.status.in_(ACTIVE_STATUSES)).order_by(Run.id)
        )
        return list(rows)

    async def count_live(self, principal_id: str) -> int:
        """Runs of a principal that are queued, running or awaiting input."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.principal_id == principal_id, Run.status.in_(ACTIVE_STATUSES))
        )
        return int(count or 0)

    async def unfinished(self) -> list[Run]:
        return list(await self.session.scalars(select(Run).where(Run.status.in_(ACTIVE_STATUSES)).order_by(Run.id)))

    async def set_fields(self, run_id: str, **values: Any) -> None:
        await self.session.execute(update(Run).where(Run.id == run_id).values(**values))

    async def settle(self, run_id: str, **values: Any) -> bool:
        """Write a run's end, unless it has one already (terminal states never change)."""
        result = await self.session.execute(
            update(Run).where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES)).values(**values)
        )
        return bool(getattr(result, "rowcount", 0))


class RunEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def after(self, run_id: str, after: int, *, limit: int, below: int | None = None) -> list[RunEvent]:
        stmt = select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.seq > after)
        if below is not None:
            stmt = stmt.where(RunEvent.seq < below)
        return list(await self.session.scalars(stmt.order_by(RunEvent.seq).limit(limit)))

    async def max_seq(self, run_id: str) -> int:
        value = await self.session.scalar(select(func.max(RunEvent.seq)).where(RunEvent.run_id == run_id))
        return int(value or 0)

    async def purge_deltas(self, finished_before: datetime) -> int:
        """Drop the deltas of runs that finished before the given time (their messages stay)."""
        old_runs = select(Run.id).where(Run.finished_at.is_not(None), Run.finished_at < finished_before)
        result = await self.session.execute(
            delete(RunEvent).where(RunEvent.type == "message.delta", RunEvent.run_id.in_(old_runs))
        )
        return int(getattr(result, "rowcount", 0) or 0)
