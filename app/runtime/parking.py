"""Parked runs: a run that waits for a person holds no task, no slot and no lease (issue 24).

When a team needs a person (a ``user_proxy``'s turn, a swarm's hand-off to the user), the run is
*parked*: its team's ``save_state()``, the request and what the run has used so far (``Carried``)
are committed with its ``input.requested`` (``RunExecution``), and the process lets the run go. It
stays ``awaiting_input``. Whatever comes first settles the parked row, on any process, with one
conditional statement each (``ParkedRepository``):

- **the answer** (``answer_parked``): stored on the row, the run goes back in the queue (``queued``);
  the process that takes it rebuilds the team from the frozen spec, loads the state, and goes on
  with the answer as the asking agent's message, the run's seqs following on;
- **a cancel** or **the input's deadline** (``settle_parked``): the run's terminal event is written
  here, past its last stored seq.

Parking commits every event the run published before it (the recorder writes in order), so the
stored log is whole and the settling event's seq is its end plus one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.conversations.models import Conversation
from app.core.db import utcnow
from app.core.envelope import Envelope, usage_data
from app.core.vocabulary import EventType
from app.runs.models import ParkedRun, Run, RunEvent
from app.runs.repository import ParkedRepository, RunEventRepository
from app.runtime.inputs import NotAwaitingInput, UnknownInputRequest
from app.runtime.lost import drop_checkpoint, forget_state

log = structlog.get_logger(__name__)

EXPIRE_BATCH = 50


class ParkNoise(logging.Filter):
    """Drops what AutoGen's runtime logs of a team stopped at a person's turn: the user proxy's raise
    (``Park``), and the errors that follow as the stopped team's handlers fail. A parking run's team id
    is in ``teams`` from its raise until its ``run_stream`` has ended; every other record passes."""

    def __init__(self) -> None:
        super().__init__()
        self.teams: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.teams:
            return True
        message = record.getMessage()
        return not any(team in message for team in self.teams)


PARK_NOISE = ParkNoise()
logging.getLogger("autogen_core").addFilter(PARK_NOISE)


@dataclass(frozen=True, slots=True)
class Carried:
    """What a parked run had used and stored, for the process that resumes it (and for its end, if it
    never resumes)."""

    counted: int  # chat messages the team's termination had counted (``Carry.messages``)
    history_len: int  # the conversation's messages the run's team was given as context (``history_len``)
    stored: int  # messages the run had stored
    active_s: float  # seconds the run had executed: its time limit counts these, not the wait
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    by_model: dict[str, list[int]] = field(default_factory=dict)  # model -> [prompt, completion]
    result: dict[str, Any] | None = None  # the run's last agent message so far
    # parked on a tool's approval: the last event of the turn its state is from (None: from its task), and
    # the call waiting ({name, call_id, arguments})
    checkpoint_seq: int | None = None
    call: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Carried:
        return cls(**data)

    def usage(self) -> dict[str, Any]:
        by_model = {model: (int(p), int(c)) for model, (p, c) in self.by_model.items()}
        return usage_data(self.prompt_tokens, self.completion_tokens, self.estimated, by_model)


async def answer_parked(session: AsyncSession, run: Run, request_id: str, content: str, now: datetime) -> bool:
    """Give a parked run its answer and put it back in the queue; the caller commits, then has it taken
    (the embedded launcher starts it, the distributed one announces it). False when the run is not
    parked; ``NotAwaitingInput`` when it was answered already (another answer won), or
    ``UnknownInputRequest`` when it waits on another request."""
    parked = ParkedRepository(session)
    row = await parked.get(run.id)
    if row is None:
        return False
    if row.request_id != request_id:
        raise UnknownInputRequest(f"The run is waiting for input request '{row.request_id}', not '{request_id}'.")
    if row.answer is not None or not await parked.answer(run.id, request_id, content, now):
        raise NotAwaitingInput("The input request was answered already.")
    run.status = "queued"
    run.worker_id = None
    run.lease_expires_at = None
    # the claim that resumes it counts as an attempt (it fences the executor's writes): it is not one of
    # the retries the run asked for, so it is granted on top of them
    run.max_attempts = (run.max_attempts or 1) + 1
    # the conversation's turn was the parked run's: free it for the claim that resumes it
    await forget_turn(session, run)
    return True


async def forget_turn(session: AsyncSession, run: Run) -> None:
    """The conversation's turn, held by ``run``, is free."""
    conversation = await session.get(Conversation, run.conversation_id, with_for_update=True)
    if conversation is not None and conversation.active_run_id == run.id:
        conversation.active_run_id = None


SettledAs = Literal["cancelled", "timed_out"]


async def settle_parked(
    session: AsyncSession, run: Run, row: ParkedRun, now: datetime, *, status: SettledAs, reason: str
) -> Envelope:
    """Write the terminal event and the end of a parked run whose row ``row`` was just taken
    (``ParkedRepository.take``): cancelled (``reason``: the cancel's) or timed out (``input_timeout``).
    The caller commits, and publishes the event where watchers of other processes read."""
    carried = Carried.from_json(row.carry)
    seq = await RunEventRepository(session).max_seq(run.id) + 1
    data: dict[str, Any] = {"status": status, "usage": carried.usage(), "duration_ms": int(carried.active_s * 1000)}
    type_: EventType
    if status == "cancelled":
        type_ = "run.cancelled"
        data["reason"] = reason
        run.stop_reason = reason
    else:
        type_ = "run.failed"
        waited = (now - row.parked_at).total_seconds()
        message = f"No answer to the input request within {run.input_timeout_s:g} s (waited {waited:.0f} s)."
        data["error"] = {"code": "input_timeout", "message": message}
        run.error_code, run.error_message = "input_timeout", message
    run.status = status
    run.finished_at = now
    run.lease_expires_at = None
    run.worker_id = None
    run.last_seq = seq
    run.message_count = carried.stored
    run.prompt_tokens, run.completion_tokens = carried.prompt_tokens, carried.completion_tokens
    run.usage_estimated = carried.estimated
    run.result = carried.result
    # the parked state is the middle of a turn, not a team to continue the conversation from
    await forget_state(session, run, now)
    await drop_checkpoint(session, run.id)
    session.add(RunEvent(run_id=run.id, seq=seq, type=type_, at=now, data=data))
    return Envelope(run.id, seq, type_, now, data)


Publish = Callable[[list[Envelope]], Awaitable[None]]


class ParkedRuns:
    """A process's hand on the parked runs: the answer, a cancel, the deadlines (``expire``, from a
    sweeper). ``publish``: where the events written here go for watchers of other processes (the
    distributed mode's Redis streams); a watcher in this process reads them from storage."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], publish: Publish | None = None) -> None:
        self._sessionmaker = sessionmaker
        self._publish = publish
        # told, with its principal, when a parked run stops waiting here (answered, cancelled, expired)
        self.on_unparked: Callable[[str], None] | None = None

    def _unparked(self, principal_id: str) -> None:
        if self.on_unparked is not None:
            self.on_unparked(principal_id)

    async def answer(self, run_id: str, request_id: str, content: str) -> tuple[Run, int] | None:
        """Answer a parked run and put it back in the queue: the run, and its last stored seq; None when
        it is not parked (it may be live somewhere). Raises as ``answer_parked``."""
        async with self._sessionmaker() as session:
            run = await session.get(Run, run_id)
            if run is None or not await answer_parked(session, run, request_id, content, utcnow()):
                await session.rollback()
                return None
            last = await RunEventRepository(session).max_seq(run_id)
            await session.commit()
        self._unparked(run.principal_id)
        log.info("parked_run_answered", run_id=run_id, request_id=request_id)
        return run, last

    async def cancel(self, run_id: str, reason: str) -> Envelope | None:
        """Cancel a parked run that has no answer: its terminal event; None when it is not such a run."""
        return await self._settle(run_id, "cancelled", reason)

    async def expire(self, limit: int = EXPIRE_BATCH) -> list[Envelope]:
        """End the parked runs whose input's deadline has passed (``timed_out``, ``input_timeout``), and
        those with a cancel asked for that their executor got as they parked (``cancelled``: in the
        distributed mode a cancel is written on the run's row, then signalled, and a signal that comes
        just after the park finds no live run to stop)."""
        async with self._sessionmaker() as session:
            due = await ParkedRepository(session).expired(utcnow(), limit)
            asked = await ParkedRepository(session).cancel_asked(limit)
        ended: list[Envelope] = []
        for run_id, reason in asked:
            if (env := await self._settle(run_id, "cancelled", reason)) is not None:
                ended.append(env)
                log.info("parked_run_cancelled_late", run_id=run_id)
        for run_id in due:
            env = await self._settle(run_id, "timed_out", "input_timeout")
            if env is not None:
                ended.append(env)
                log.info("parked_run_expired", run_id=run_id)
        return ended

    async def counts(self) -> dict[str, int]:
        async with self._sessionmaker() as session:
            return await ParkedRepository(session).counts()

    async def next_deadline(self) -> datetime | None:
        async with self._sessionmaker() as session:
            return await ParkedRepository(session).next_deadline()

    async def _settle(self, run_id: str, status: SettledAs, reason: str) -> Envelope | None:
        async with self._sessionmaker() as session:
            run = await session.get(Run, run_id, with_for_update=True)
            row = await ParkedRepository(session).take(run_id) if run is not None else None
            if run is None or row is None:
                await session.rollback()
                return None
            env = await settle_parked(session, run, row, utcnow(), status=status, reason=reason)
            await session.commit()
        self._unparked(run.principal_id)
        if self._publish is not None:
            await self._publish([env])
        return env
