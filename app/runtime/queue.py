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

Before it settles a run, the sweeper copies into the database the deltas the lost executor streamed
to the run's Redis stream but never stored, so the stored log has no gap; what neither holds is named
by the settling event's ``lost_after_seq`` (``app/runtime/lost.py``). The run's row, locked by the
sweep, is the lease's fence: the executor's event recorder checks in each of its transactions that the
run is still its own (``leases_held``), so a worker that wakes after it was swept writes nothing more.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.envelope import STREAMED_TYPES, Envelope, usage_data
from app.runs.models import ParkedRun, Run, RunEvent
from app.runs.repository import EVENT_INSERT, RunEventRepository, RunQueueRepository, log_rows
from app.runtime.lost import drop_checkpoint, end_lost_run, requeue_lost
from app.runtime.redis_bus import RedisStreams

log = structlog.get_logger(__name__)

SWEEP_BATCH = 50


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
        async with self._sessionmaker() as session:
            rows = await RunQueueRepository(session).claimable(limit)
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
            held = await RunQueueRepository(session).renew(run_ids, self.worker_id, utcnow() + self.lease)
            await session.commit()
        return held

    async def request_cancel(self, run_id: str, reason: str) -> None:
        """Write the cancel on the run's row, where its executor finds it even if the signal is lost."""
        async with self._sessionmaker() as session:
            await RunQueueRepository(session).request_cancel(run_id, reason)
            await session.commit()

    async def _next_seq(self, session: AsyncSession, run_id: str) -> int:
        # a lost executor may have streamed deltas to Redis that never reached the database
        stored = await RunEventRepository(session).max_seq(run_id)
        return max(stored, await self._streams.top_seq(run_id)) + 1

    async def cancel_queued(self, run_id: str, reason: str) -> Envelope | None:
        """Cancel a run no executor has claimed: its terminal event, or None when it is claimed (or over)."""
        async with self._sessionmaker() as session:
            run = await RunQueueRepository(session).unclaimed(run_id)
            if run is None:
                await session.rollback()
                return None
            seq = await self._next_seq(session, run_id)
            now = utcnow()
            messages, prompt, completion, estimated = await RunQueueRepository(session).usage(run_id)
            data: dict[str, Any] = {
                "status": "cancelled",
                "reason": reason,
                "usage": usage_data(prompt, completion, estimated),
                "duration_ms": 0,
            }
            env = Envelope(run_id, seq, "run.cancelled", now, data)
            session.add(RunEvent(run_id=run_id, seq=seq, type=env.type, at=now, data=data))
            # answered while parked, cancelled before an executor took it: its parked row goes with it
            await session.execute(delete(ParkedRun).where(ParkedRun.run_id == run_id))
            await drop_checkpoint(session, run_id)
            run.status = "cancelled"
            run.stop_reason = reason
            run.finished_at = now
            run.last_seq = seq
            run.message_count = messages
            run.prompt_tokens, run.completion_tokens, run.usage_estimated = prompt, completion, estimated
            await session.commit()
        await self._streams.write([env])
        return env

    async def sweep(self) -> list[Envelope]:
        """Settle the runs whose lease lapsed; the events written (already in Redis too)."""
        now = utcnow()
        written: list[Envelope] = []
        async with self._sessionmaker() as session:
            runs = await RunQueueRepository(session).lapsed(now, SWEEP_BATCH)
            if not runs:
                await session.rollback()
                return []
            for run in runs:
                written.append(await self._settle_lost(session, run, now))
            await session.commit()
        await self._streams.write(written)
        return written

    async def _copy_unstored(self, session: AsyncSession, run_id: str) -> tuple[int, int]:
        """Store what the run's Redis stream holds past the database (the streamed events a lost
        executor published and never wrote): the last stored seq before, and the last one copied."""
        stored = await RunEventRepository(session).max_seq(run_id)
        tail = await self._streams.tail(run_id, stored)
        streamed: list[Envelope] = []
        for env in tail:
            if env.type not in STREAMED_TYPES:
                break  # durable events are stored before they are published: none is missing
            streamed.append(env)
        if not streamed:
            return stored, 0
        await session.execute(EVENT_INSERT, log_rows(streamed))
        log.info("lost_run_log_copied", run_id=run_id, after_seq=stored, events=len(streamed))
        return stored, streamed[-1].seq

    async def _settle_lost(self, session: AsyncSession, run: Run, now: datetime) -> Envelope:
        stored, copied = await self._copy_unstored(session, run.id)
        lost = run.worker_id
        if run.attempts < run.max_attempts and run.cancel_requested is None:
            log.warning("run_requeued", run_id=run.id, lost_worker=lost, attempt=run.attempts)
            return await requeue_lost(session, run, stored, now, reason="worker_lost", copied=copied)
        env = await end_lost_run(
            session,
            run,
            stored,
            now,
            code="worker_lost",
            message="The worker executing the run stopped answering; its lease lapsed.",
            copied=copied,
        )
        log.warning("run_settled_worker_lost", run_id=run.id, lost_worker=lost, status=run.status)
        return env
