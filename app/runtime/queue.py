"""The run queue in the database (distributed mode): claims under a lease, renewals, and the sweeper.

A run is claimed by one executor at a time: ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL (SQLite takes its write lock up front, which
serialises claims just as well). A claim takes the oldest queued run of a
conversation whose turn is free and marks the conversation's turn as held
(``conversations.active_run_id``), so the runs of one conversation still go
one after another, whichever process runs them.

The executor renews its leases every third of ``lease_s``. A run whose
lease lapsed lost its executor (killed, or cut off from the database): the
sweeper, in any process, ends it ``failed`` with ``worker_lost`` (or
``cancelled``, when a cancel was asked for) or, when the run asked for
retries, puts it back in the queue. Its committed messages stay.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from app.conversations.models import Conversation, Message
from app.core.db import utcnow
from app.runs.models import Run, RunEvent
from app.runs.repository import ACTIVE_STATUSES, RunEventRepository
from app.runtime.envelope import Envelope
from app.runtime.redis_bus import RedisStreams

log = structlog.get_logger(__name__)

SWEEP_BATCH = 50


async def _usage(session: AsyncSession, run_id: str) -> tuple[int, int, int]:
    """Messages, prompt tokens and completion tokens a run has stored."""
    row = (
        await session.execute(
            select(
                func.count(Message.id),
                func.coalesce(func.sum(Message.prompt_tokens), 0),
                func.coalesce(func.sum(Message.completion_tokens), 0),
            ).where(Message.run_id == run_id)
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


class RunQueue:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        streams: RedisStreams,
        worker_id: str,
        lease_s: float,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._streams = streams
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_s)

    async def claim(self, limit: int) -> list[Run]:
        """Take up to ``limit`` queued runs, each the oldest of a conversation whose turn is free."""
        earlier = aliased(Run)
        has_earlier = exists().where(
            earlier.conversation_id == Run.conversation_id,
            earlier.status == "queued",
            or_(earlier.created_at < Run.created_at, and_(earlier.created_at == Run.created_at, earlier.id < Run.id)),
        )
        stmt = (
            select(Run, Conversation)
            .join(Conversation, Conversation.id == Run.conversation_id)
            .where(
                Run.status == "queued",
                Run.worker_id.is_(None),
                Conversation.active_run_id.is_(None),
                ~has_earlier,
            )
            .order_by(Run.created_at, Run.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=[Run.__table__, Conversation.__table__])
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
            if not rows:
                await session.rollback()
                return []
            expires = utcnow() + self.lease
            runs: list[Run] = []
            for run, conversation in rows:
                run.worker_id = self.worker_id
                run.lease_expires_at = expires
                run.attempts = (run.attempts or 0) + 1
                conversation.active_run_id = run.id
                runs.append(run)
            await session.commit()
        for run in runs:
            log.info("run_claimed", run_id=run.id, worker_id=self.worker_id, attempt=run.attempts)
        return runs

    async def renew(self, run_ids: list[str]) -> dict[str, str | None]:
        """Extend the leases this executor still holds: run id -> the cancel asked for it, if any.

        A run missing from the answer is no longer ours (swept, or finished).
        """
        if not run_ids:
            return {}
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(Run)
                .where(Run.id.in_(run_ids), Run.worker_id == self.worker_id, Run.status.in_(ACTIVE_STATUSES))
                .values(lease_expires_at=utcnow() + self.lease)
                .returning(Run.id, Run.cancel_requested)
            )
            held = {row[0]: row[1] for row in result.all()}
            await session.commit()
        return held

    async def request_cancel(self, run_id: str, reason: str) -> None:
        """Write the cancel on the run's row, where its executor finds it even if the signal is lost."""
        async with self._sessionmaker() as session:
            await session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES), Run.cancel_requested.is_(None))
                .values(cancel_requested=reason)
            )
            await session.commit()

    async def _next_seq(self, session: AsyncSession, run_id: str) -> int:
        # a lost executor may have streamed deltas to Redis that never reached the database
        stored = await RunEventRepository(session).max_seq(run_id)
        return max(stored, await self._streams.top_seq(run_id)) + 1

    async def cancel_queued(self, run_id: str, reason: str) -> Envelope | None:
        """Cancel a run no executor has claimed: its terminal event, or None when it is claimed (or over)."""
        async with self._sessionmaker() as session:
            run = await session.scalar(
                select(Run).where(Run.id == run_id, Run.status == "queued", Run.worker_id.is_(None)).with_for_update()
            )
            if run is None:
                await session.rollback()
                return None
            seq = await self._next_seq(session, run_id)
            now = utcnow()
            messages, prompt, completion = await _usage(session, run_id)
            data: dict[str, Any] = {
                "status": "cancelled",
                "reason": reason,
                "usage": _usage_data(prompt, completion),
                "duration_ms": 0,
            }
            env = Envelope(run_id, seq, "run.cancelled", now, data)
            session.add(RunEvent(run_id=run_id, seq=seq, type=env.type, at=now, data=data))
            run.status = "cancelled"
            run.stop_reason = reason
            run.finished_at = now
            run.last_seq = seq
            run.message_count = messages
            run.prompt_tokens, run.completion_tokens = prompt, completion
            await session.commit()
        await self._streams.write([env])
        return env

    async def sweep(self) -> list[Envelope]:
        """Settle the runs whose lease lapsed; the events written (already in Redis too)."""
        now = utcnow()
        written: list[Envelope] = []
        async with self._sessionmaker() as session:
            runs = list(
                await session.scalars(
                    select(Run)
                    .where(
                        Run.worker_id.is_not(None),
                        Run.status.in_(ACTIVE_STATUSES),
                        Run.lease_expires_at < now,
                    )
                    .order_by(Run.lease_expires_at)
                    .limit(SWEEP_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not runs:
                await session.rollback()
                return []
            for run in runs:
                written.append(await self._settle_lost(session, run, now))
            await session.commit()
        await self._streams.write(written)
        return written

    async def _settle_lost(self, session: AsyncSession, run: Run, now: datetime) -> Envelope:
        seq = await self._next_seq(session, run.id)
        conversation = await session.get(Conversation, run.conversation_id, with_for_update=True)
        if conversation is not None and conversation.active_run_id == run.id:
            conversation.active_run_id = None
        lost = run.worker_id
        data: dict[str, Any]
        if run.attempts < run.max_attempts and run.cancel_requested is None:
            data = {"reason": "worker_lost", "attempt": run.attempts, "max_attempts": run.max_attempts}
            type_ = "run.requeued"
            run.status = "queued"
            run.worker_id = None
            run.lease_expires_at = None
            if conversation is not None:
                # the lost attempt's saved state is not this run's: the retry continues from the messages
                conversation.state = None
                conversation.state_signature = None
            log.warning("run_requeued", run_id=run.id, lost_worker=lost, attempt=run.attempts)
        else:
            messages, prompt, completion = await _usage(session, run.id)
            duration_ms = int((now - run.started_at).total_seconds() * 1000) if run.started_at else 0
            data = {"usage": _usage_data(prompt, completion), "duration_ms": duration_ms}
            if run.cancel_requested is not None:
                type_ = "run.cancelled"
                data.update(status="cancelled", reason=run.cancel_requested)
                run.status, run.stop_reason = "cancelled", run.cancel_requested
            else:
                type_ = "run.failed"
                message = "The worker executing the run stopped answering; its lease lapsed."
                data.update(status="failed", error={"code": "worker_lost", "message": message})
                run.status, run.error_code, run.error_message = "failed", "worker_lost", message
            run.finished_at = now
            run.lease_expires_at = None
            run.last_seq = seq
            run.message_count = messages
            run.prompt_tokens, run.completion_tokens = prompt, completion
            if conversation is not None:
                conversation.state = None
                conversation.state_signature = None
                conversation.updated_at = now
            log.warning("run_settled_worker_lost", run_id=run.id, lost_worker=lost, status=run.status)
        session.add(RunEvent(run_id=run.id, seq=seq, type=type_, at=now, data=data))
        return Envelope(run.id, seq, type_, now, data)


def _usage_data(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
