"""Ending a run whose executor is gone: one way, for both modes.

The embedded mode finds such runs at its next start (``recovery.py``: ``server_restarted``); the
distributed mode by a lapsed lease (``queue.py``: ``worker_lost``). Either way the run ends
``failed`` with that code, or ``cancelled`` when a cancel had been asked for; its usage is that of
the messages it stored; and its conversation's saved team state is dropped. That state is from
before the lost run, so keeping it would make the next run forget the lost run's stored messages;
without it, the next run rebuilds its context from all the stored messages.

Its executor may have published events that were never stored: up to ``UNSTORED_MAX`` seqs past the
stored log (``Journal``). The event that settles the run is numbered past that bound, so no seq a
watcher was sent ever names a second event, and it says where the stored log ends
(``lost_after_seq``): events a watcher saw after that seq are gone, and it drops them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversations.models import Conversation
from app.core.envelope import UNSTORED_MAX, Envelope, usage_data
from app.core.vocabulary import EventType
from app.runs.models import Run, RunCheckpoint, RunEvent
from app.runs.repository import RunEventRepository, RunQueueRepository


def lost_seqs(stored: int, copied: int = 0) -> tuple[int, int]:
    """Where a lost run's stored log ends, and the seq of the event that settles it: ``UNSTORED_MAX``
    past that end, so past every seq its executor can have sent.

    ``stored``: the run's last stored seq when its executor was cut off; ``copied``: the last seq
    copied into storage since from elsewhere (the run's Redis stream)."""
    kept = max(stored, copied)
    return kept, kept + UNSTORED_MAX + 1


async def end_lost_run(
    session: AsyncSession, run: Run, stored: int, now: datetime, *, code: str, message: str, copied: int = 0
) -> Envelope:
    """Write the terminal event and the end of ``run``, a row of ``session``; commit is the caller's.

    ``stored`` and ``copied``: as for ``lost_seqs``."""
    lost_after, seq = lost_seqs(stored, copied)
    messages, prompt, completion, estimated = await RunQueueRepository(session).usage(run.id)
    duration_ms = int((now - run.started_at).total_seconds() * 1000) if run.started_at else 0
    data: dict[str, Any] = {
        "usage": usage_data(prompt, completion, estimated),
        "duration_ms": duration_ms,
        "lost_after_seq": lost_after,
    }
    type_: EventType
    if run.cancel_requested is not None:
        type_ = "run.cancelled"
        data.update(status="cancelled", reason=run.cancel_requested)
        run.status, run.stop_reason = "cancelled", run.cancel_requested
    else:
        type_ = "run.failed"
        data.update(status="failed", error={"code": code, "message": message})
        run.status, run.error_code, run.error_message = "failed", code, message
    run.finished_at = now
    run.lease_expires_at = None
    run.last_seq = seq
    run.message_count = messages
    run.prompt_tokens, run.completion_tokens, run.usage_estimated = prompt, completion, estimated
    await forget_state(session, run, now)
    await drop_checkpoint(session, run.id)
    session.add(RunEvent(run_id=run.id, seq=seq, type=type_, at=now, data=data))
    return Envelope(run.id, seq, type_, now, data)


async def requeue_lost(
    session: AsyncSession, run: Run, stored: int, now: datetime, *, reason: str, copied: int = 0
) -> Envelope:
    """Put ``run`` (a row of ``session``) back in the queue to resume: its ``run.requeued``, numbered as
    a lost run's end is (``lost_seqs``), naming the messages its attempt began and never completed. Its
    checkpoint stays; the conversation's saved state (from before the run) goes, as for a lost run's end.
    The commit is the caller's."""
    lost_after, seq = lost_seqs(stored, copied)
    data: dict[str, Any] = {
        "reason": reason,
        "attempt": run.attempts,
        "max_attempts": run.max_attempts,
        "lost_after_seq": lost_after,
        "abandoned_message_ids": await RunEventRepository(session).abandoned(run.id),
    }
    run.status = "queued"
    run.worker_id = None
    run.lease_expires_at = None
    await forget_state(session, run, now)
    session.add(RunEvent(run_id=run.id, seq=seq, type="run.requeued", at=now, data=data))
    return Envelope(run.id, seq, "run.requeued", now, data)


async def drop_checkpoint(session: AsyncSession, run_id: str) -> None:
    """An ended run's checkpoint (``RunCheckpoint``) goes: nothing will resume from it."""
    await session.execute(delete(RunCheckpoint).where(RunCheckpoint.run_id == run_id))


async def forget_state(session: AsyncSession, run: Run, now: datetime) -> None:
    """The lost run's conversation: no saved team state, and its turn free if this run held it."""
    conversation = await session.get(Conversation, run.conversation_id, with_for_update=True)
    if conversation is None:
        return
    if conversation.active_run_id == run.id:
        conversation.active_run_id = None
    conversation.state = None
    conversation.state_signature = None
    conversation.updated_at = now
