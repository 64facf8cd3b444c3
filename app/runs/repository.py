from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Select, and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.conversations.models import Conversation, Message
from app.core.envelope import STREAMED_TYPES, Envelope
from app.core.repository import Execution, Page, Repository, table
from app.core.vocabulary import ACTIVE_STATUSES, EventType
from app.runs.models import ModelCallRecord, ParkedRun, Run, RunCheckpoint, RunEvent

# prepared statements of the per-run write path, for the recorder's ``Rows`` (one executemany per batch)
_runs = table(Run)
_RUN_STARTED = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run_id"))
    .values(status="running", started_at=bindparam("b_started_at"), attempts=bindparam("b_attempts"))
)
_MODEL_CALL = insert(table(ModelCallRecord))


def event_row(env: Envelope) -> dict[str, Any]:
    """The ``run_events`` row of one event."""
    return {"run_id": env.run_id, "seq": env.seq, "seq_end": None, "type": env.type, "at": env.at, "data": env.data}


EVENT_INSERT = insert(table(RunEvent))


def event_insert(env: Envelope) -> Execution:
    """A durable event's row: an insert for ``commit_inserts`` (a run's ``run.queued``, written with the run)."""
    return EVENT_INSERT, event_row(env)


def run_started(run_id: str, started_at: datetime, attempts: int) -> Execution:
    """The run is running (its ``run.started``): an execution for the recorder."""
    return _RUN_STARTED, {"b_run_id": run_id, "b_started_at": started_at, "b_attempts": attempts}


_RUN_RESUMED = (
    update(_runs).where(_runs.c.id == bindparam("b_run_id")).values(status="running", attempts=bindparam("b_attempts"))
)


def run_resumed(run_id: str, attempts: int) -> Execution:
    """The run, taken again after a crash, is running (its ``run.resumed``): an execution for the recorder."""
    return _RUN_RESUMED, {"b_run_id": run_id, "b_attempts": attempts}


def model_call(values: dict[str, Any]) -> Execution:
    """A model call's record: an execution for the recorder."""
    return _MODEL_CALL, values


# in the recorder's transaction (``Apply``: a synchronous connection)


def set_run_fields(conn: Connection, run_id: str, **values: Any) -> None:
    conn.execute(update(_runs).where(_runs.c.id == run_id).values(**values))


_parked = table(ParkedRun)


def park_run(conn: Connection, run_id: str, parked: dict[str, Any], run_values: dict[str, Any]) -> None:
    """The run waits for a person with no process holding it: ``awaiting_input``, its lease given up,
    and its parked row (``ParkedRun``'s columns). In its ``input.requested``'s transaction."""
    conn.execute(
        update(_runs)
        .where(_runs.c.id == run_id)
        .values(status="awaiting_input", worker_id=None, lease_expires_at=None, **run_values)
    )
    conn.execute(insert(_parked).values(run_id=run_id, **parked))


def drop_parked(conn: Connection, run_id: str) -> None:
    """A run's end: a parked row it may still have (answered, then cancelled before it resumed) goes,
    and so does its checkpoint."""
    conn.execute(delete(_parked).where(_parked.c.run_id == run_id))
    conn.execute(delete(_checkpoints).where(_checkpoints.c.run_id == run_id))


_checkpoints = table(RunCheckpoint)


_CHECKPOINT_DROP = delete(_checkpoints).where(_checkpoints.c.run_id == bindparam("b_run_id"))
_CHECKPOINT_SAVE = insert(_checkpoints)


def checkpoint_saved(run_id: str, values: dict[str, Any]) -> tuple[Execution, ...]:
    """The run's checkpoint (``RunCheckpoint``'s columns but its run), replacing the one before:
    executions for the recorder, stored with the message that ended the turn (in its ``Rows``)."""
    return (_CHECKPOINT_DROP, {"b_run_id": run_id}), (_CHECKPOINT_SAVE, {"run_id": run_id, **values})


def unpark_run(conn: Connection, run_id: str, attempts: int) -> None:
    """The parked run is running again (its attempt ``attempts``): its row goes, in its
    ``input.received``'s transaction."""
    conn.execute(delete(_parked).where(_parked.c.run_id == run_id))
    conn.execute(update(_runs).where(_runs.c.id == run_id).values(status="running", attempts=attempts))


_LEASES = (
    select(_runs.c.id, _runs.c.worker_id, _runs.c.attempts)
    .where(_runs.c.id.in_(bindparam("b_ids", expanding=True)), _runs.c.status.in_(ACTIVE_STATUSES))
    .order_by(_runs.c.id)
    .with_for_update()
)


def leases_held(conn: Connection, leases: dict[str, tuple[str, int]]) -> set[str]:
    """Of the runs in ``leases`` (run id -> the executor's worker id and attempt), those still held
    under that lease (not swept, requeued or settled by another process), their rows locked until the
    transaction ends: the fence of every write an executor makes."""
    rows = conn.execute(_LEASES, {"b_ids": sorted(leases)}).all()
    return {run_id for run_id, worker_id, attempts in rows if leases[run_id] == (worker_id, attempts)}


SETTLED = (
    "status",
    "finished_at",
    "stop_reason",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "message_count",
    "last_seq",
    "result",
    "lease_expires_at",
)
_SETTLE = (
    update(_runs)
    .where(_runs.c.id == bindparam("b_run_id"), _runs.c.status.in_(ACTIVE_STATUSES))
    .values({name: bindparam(f"b_{name}") for name in SETTLED})
)


def settle_run(conn: Connection, run_id: str, **values: Any) -> bool:
    """Write a run's end (every column of ``SETTLED``), unless it has one already (terminal states never change)."""
    if values.keys() != set(SETTLED):
        raise TypeError(f"a run's end sets {', '.join(SETTLED)}; got {', '.join(sorted(values))}")
    result = conn.execute(_SETTLE, {"b_run_id": run_id, **{f"b_{k}": v for k, v in values.items()}})
    return bool(result.rowcount)


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

    async def in_conversation(self, conversation_id: str) -> bool:
        """Whether any run was ever started in the conversation."""
        found = await self.session.scalar(select(Run.id).where(Run.conversation_id == conversation_id).limit(1))
        return found is not None

    async def active_in_conversation(self, conversation_id: str) -> list[Run]:
        rows = await self.session.scalars(
            select(Run).where(Run.conversation_id == conversation_id, Run.status.in_(ACTIVE_STATUSES)).order_by(Run.id)
        )
        return list(rows)

    async def count_live(self, principal_id: str) -> int:
        """Runs of a principal that are queued, running or awaiting input with a process holding them
        (a parked run holds none: it counts towards its own limit, ``ParkedRepository.count_for``)."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(Run)
            .where(
                Run.principal_id == principal_id,
                Run.status.in_(ACTIVE_STATUSES),
                ~exists().where(ParkedRun.run_id == Run.id, ParkedRun.answer.is_(None)),
            )
        )
        return int(count or 0)

    async def unfinished(self) -> list[Run]:
        return list(await self.session.scalars(select(Run).where(Run.status.in_(ACTIVE_STATUSES)).order_by(Run.id)))

    async def by_idempotency_key(self, principal_id: str, key: str) -> Run | None:
        """The principal's run started with this ``Idempotency-Key`` (at most one: a unique index)."""
        run: Run | None = await self.session.scalar(self._owned(principal_id).where(Run.idempotency_key == key))
        return run

    async def forget_idempotency_key(self, run_id: str, key: str) -> None:
        """Free a key whose window has passed, so that a new run may take it."""
        await self.session.execute(
            update(Run)
            .where(Run.id == run_id, Run.idempotency_key == key)
            .values(idempotency_key=None, idempotency_hash=None)
        )


MAX_DELTA_SPAN = 256  # the most deltas one stored row holds
_PARTS, _OFFSETS = "_parts", "_at_us"


def pack_deltas(deltas: list[Envelope]) -> dict[str, Any]:
    """The data of one row holding consecutive deltas of one message: the first delta's data with every
    text, and each delta's time as microseconds after the first's."""
    first = deltas[0].at
    data = dict(deltas[0].data)
    data[_PARTS] = [d.data["text"] for d in deltas]
    data[_OFFSETS] = [int((d.at - first) / timedelta(microseconds=1)) for d in deltas]
    return data


def packed_row(deltas: list[Envelope]) -> dict[str, Any]:
    """The ``run_events`` row of consecutive deltas of one message (one delta: its plain row)."""
    first, last = deltas[0], deltas[-1]
    if len(deltas) == 1:
        return event_row(first)
    return {
        "run_id": first.run_id,
        "seq": first.seq,
        "seq_end": last.seq,
        "type": first.type,
        "at": first.at,
        "data": pack_deltas(deltas),
    }


def log_rows(events: list[Envelope]) -> list[dict[str, Any]]:
    """The rows of a run's consecutive events, deltas of one message packed as the recorder packs them."""
    rows: list[dict[str, Any]] = []
    group: list[Envelope] = []
    for env in events:
        if group and (
            env.type != group[-1].type
            or env.seq != group[-1].seq + 1
            or len(group) == MAX_DELTA_SPAN
            or env.data.get("message_id") != group[-1].data.get("message_id")
        ):
            rows.append(packed_row(group))
            group = []
        if env.type in STREAMED_TYPES:
            group.append(env)
        else:
            rows.append(event_row(env))
    if group:
        rows.append(packed_row(group))
    return rows


def _stored_type(type_: str) -> EventType:
    # the log holds only types this server wrote (``app.core.vocabulary``)
    return cast(EventType, type_)


def expand(row: RunEvent) -> list[Envelope]:
    """A stored row as the events it holds (one, or a run of deltas)."""
    if row.seq_end is None:
        return [Envelope(row.run_id, row.seq, _stored_type(row.type), row.at, row.data)]
    data = row.data
    parts, offsets = data[_PARTS], data[_OFFSETS]
    base = {k: v for k, v in data.items() if k not in (_PARTS, _OFFSETS)}
    out: list[Envelope] = []
    for i, (text, offset) in enumerate(zip(parts, offsets, strict=True)):
        one = dict(base)
        one["text"] = text  # keeps its place among the keys
        out.append(
            Envelope(row.run_id, row.seq + i, _stored_type(row.type), row.at + timedelta(microseconds=offset), one)
        )
    return out


class RunEventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def after(
        self, run_id: str, after: int, *, limit: int, below: int | None = None
    ) -> tuple[list[Envelope], bool]:
        """Events with ``after < seq`` (``< below``), in order, from at most ``limit`` rows; and whether
        those were the last rows."""
        stmt = select(RunEvent).where(
            RunEvent.run_id == run_id,
            # a row of deltas that starts at or before `after` may still reach past it
            RunEvent.seq > after - MAX_DELTA_SPAN + 1,
            or_(RunEvent.seq > after, RunEvent.seq_end > after),
        )
        if below is not None:
            stmt = stmt.where(RunEvent.seq < below)
        rows = list(await self.session.scalars(stmt.order_by(RunEvent.seq).limit(limit)))
        events = [env for row in rows for env in expand(row) if env.seq > after and (below is None or env.seq < below)]
        return events, len(rows) < limit

    async def open_inputs(self, run_id: str) -> tuple[dict[str, int], set[str]]:
        """The run's input requests (request id to the seq of its ``input.requested``), and those answered."""
        rows = await self.session.execute(
            select(RunEvent.type, RunEvent.seq, RunEvent.data).where(
                RunEvent.run_id == run_id, RunEvent.type.in_(("input.requested", "input.received"))
            )
        )
        requested: dict[str, int] = {}
        received: set[str] = set()
        for kind, seq, data in rows:
            if kind == "input.requested":
                requested[data["request_id"]] = seq
            else:
                received.add(data["request_id"])
        return requested, received

    async def input_request(self, run_id: str, request_id: str) -> dict[str, Any] | None:
        """The data of the run's ``input.requested`` for ``request_id``; None when there is none."""
        rows = await self.session.scalars(
            select(RunEvent.data).where(RunEvent.run_id == run_id, RunEvent.type == "input.requested")
        )
        return next((data for data in rows if data.get("request_id") == request_id), None)

    async def of_types(
        self, run_id: str, types: Sequence[str], after: int = 0
    ) -> list[tuple[int, str, dict[str, Any]]]:
        """The run's events of ``types`` (none of them deltas) after seq ``after``: (seq, type, data), in order."""
        rows = await self.session.execute(
            select(RunEvent.seq, RunEvent.type, RunEvent.data)
            .where(RunEvent.run_id == run_id, RunEvent.type.in_(types), RunEvent.seq > after)
            .order_by(RunEvent.seq)
        )
        return [(seq, type_, data) for seq, type_, data in rows]

    async def abandoned(self, run_id: str) -> list[str]:
        """The messages the run's last attempt began to stream and never completed (its process died):
        every ``message.delta``'s message without a ``message.completed``, and the reasoning streamed
        after the attempt's last durable event. Their ids, in the order they began."""
        start = await self.session.scalar(
            select(func.max(RunEvent.seq)).where(
                RunEvent.run_id == run_id, RunEvent.type.in_(("run.started", "run.resumed"))
            )
        )
        rows = await self.session.execute(
            select(RunEvent.type, RunEvent.data)
            .where(RunEvent.run_id == run_id, RunEvent.seq > (start or 0))
            .order_by(RunEvent.seq)
        )
        text: dict[str, None] = {}  # message ids with deltas, in order
        reasoning: dict[str, None] = {}  # reasoning streamed since the last durable event
        completed: set[str] = set()
        for type_, data in rows:
            if type_ == "message.delta":
                text[data["message_id"]] = None
            elif type_ == "reasoning.delta":
                reasoning[data["message_id"]] = None
            else:
                if type_ == "message.completed":
                    completed.add(data["message_id"])
                reasoning.clear()  # it led to this event (a tool call, a message): not abandoned
        return [m for m in {**text, **reasoning} if m not in completed]

    async def max_seq(self, run_id: str) -> int:
        value = await self.session.scalar(
            select(func.max(func.coalesce(RunEvent.seq_end, RunEvent.seq))).where(RunEvent.run_id == run_id)
        )
        return int(value or 0)

    async def purge_deltas(self, finished_before: datetime) -> int:
        """Drop the deltas of runs that finished before the given time (their messages stay)."""
        old_runs = select(Run.id).where(Run.finished_at.is_not(None), Run.finished_at < finished_before)
        result = await self.session.execute(
            delete(RunEvent).where(RunEvent.type.in_(STREAMED_TYPES), RunEvent.run_id.in_(old_runs))
        )
        return int(getattr(result, "rowcount", 0) or 0)


@functools.lru_cache(maxsize=16)
def _claimable(limit: int) -> Select[Run, Conversation]:
    """The claim query, built once per limit: building it (an aliased entity) cost ~0.8 ms of CPU per claim."""
    earlier = aliased(Run)
    has_earlier = exists().where(
        earlier.conversation_id == Run.conversation_id,
        earlier.status == "queued",
        or_(earlier.created_at < Run.created_at, and_(earlier.created_at == Run.created_at, earlier.id < Run.id)),
    )
    return (
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


class RunQueueRepository:
    """The queries of the run queue (distributed mode); ``FOR UPDATE SKIP LOCKED`` where PostgreSQL has it
    (SQLite ignores the clause, and its write lock, taken up front, serialises the writers anyway)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claimable(self, limit: int) -> list[tuple[Run, Conversation]]:
        """Queued runs no one holds, each the oldest of a conversation whose turn is free; locked."""
        stmt = _claimable(limit)
        return [(run, conversation) for run, conversation in (await self.session.execute(stmt)).all()]

    async def renew(self, run_ids: list[str], worker_id: str, until: datetime) -> dict[str, str | None]:
        """Extend the leases ``worker_id`` still holds; run id -> the cancel asked for it, if any."""
        result = await self.session.execute(
            update(Run)
            .where(Run.id.in_(run_ids), Run.worker_id == worker_id, Run.status.in_(ACTIVE_STATUSES))
            .values(lease_expires_at=until)
            .returning(Run.id, Run.cancel_requested)
        )
        return {row[0]: row[1] for row in result.all()}

    async def request_cancel(self, run_id: str, reason: str) -> None:
        await self.session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(ACTIVE_STATUSES), Run.cancel_requested.is_(None))
            .values(cancel_requested=reason)
        )

    async def unclaimed(self, run_id: str) -> Run | None:
        """The run if it is queued and no one holds it, locked (waits for a claim in progress)."""
        run: Run | None = await self.session.scalar(
            select(Run).where(Run.id == run_id, Run.status == "queued", Run.worker_id.is_(None)).with_for_update()
        )
        return run

    async def lapsed(self, now: datetime, limit: int) -> list[Run]:
        """Held runs whose lease ran out before ``now``, locked (skipping those another sweeper has)."""
        return list(
            await self.session.scalars(
                select(Run)
                .where(Run.worker_id.is_not(None), Run.status.in_(ACTIVE_STATUSES), Run.lease_expires_at < now)
                .order_by(Run.lease_expires_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )

    async def usage_by_model(self, run_id: str) -> dict[str, tuple[int, int]]:
        """What a run's recorded model calls billed, per model: prompt and completion tokens."""
        rows = await self.session.execute(
            select(
                ModelCallRecord.model,
                func.coalesce(func.sum(ModelCallRecord.prompt_tokens), 0),
                func.coalesce(func.sum(ModelCallRecord.completion_tokens), 0),
            )
            .where(ModelCallRecord.run_id == run_id)
            .group_by(ModelCallRecord.model)
        )
        return {model: (int(prompt), int(completion)) for model, prompt, completion in rows}

    async def usage(self, run_id: str) -> tuple[int, int, int, bool]:
        """The messages a run has stored, and what its recorded model calls billed: prompt and
        completion tokens, and whether some counts were estimated."""
        messages = await self.session.scalar(select(func.count(Message.id)).where(Message.run_id == run_id))
        row = (
            await self.session.execute(
                select(
                    func.coalesce(func.sum(ModelCallRecord.prompt_tokens), 0),
                    func.coalesce(func.sum(ModelCallRecord.completion_tokens), 0),
                    func.coalesce(func.max(case((ModelCallRecord.usage_estimated, 1), else_=0)), 0),
                ).where(ModelCallRecord.run_id == run_id)
            )
        ).one()
        return int(messages or 0), int(row[0]), int(row[1]), bool(row[2])


class ParkedRepository:
    """Parked runs (``ParkedRun``): the one row each, claimed by whichever comes first of the answer,
    a cancel and the deadline. Each claim is one conditional statement, so two never both win."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, run_id: str) -> ParkedRun | None:
        return await self.session.get(ParkedRun, run_id)

    async def answer(self, run_id: str, request_id: str, content: str, at: datetime) -> bool:
        """Give the parked run its answer; False when it has one already, or waits on another request."""
        result = await self.session.execute(
            update(ParkedRun)
            .where(ParkedRun.run_id == run_id, ParkedRun.request_id == request_id, ParkedRun.answer.is_(None))
            .values(answer=content, answered_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(cast(Any, result).rowcount)

    async def take(self, run_id: str) -> ParkedRun | None:
        """Remove the parked run's row unless it was answered: the run is to be settled (cancelled, or
        its input expired). None when there is no such row (answered, resumed, or never parked)."""
        row = await self.get(run_id)
        if row is None or row.answer is not None:
            return None
        result = await self.session.execute(
            delete(ParkedRun)
            .where(ParkedRun.run_id == run_id, ParkedRun.answer.is_(None))
            .execution_options(synchronize_session=False)
        )
        return row if cast(Any, result).rowcount else None

    async def expired(self, now: datetime, limit: int) -> list[str]:
        """Parked runs whose input's deadline has passed, unanswered: the oldest first."""
        rows = await self.session.scalars(
            select(ParkedRun.run_id)
            .where(ParkedRun.deadline <= now, ParkedRun.answer.is_(None))
            .order_by(ParkedRun.deadline)
            .limit(limit)
        )
        return list(rows)

    async def cancel_asked(self, limit: int) -> list[tuple[str, str]]:
        """Parked runs, unanswered, whose row has a cancel asked for (it reached their executor as they
        parked): (run id, the cancel's reason)."""
        rows = await self.session.execute(
            select(ParkedRun.run_id, Run.cancel_requested)
            .join(Run, Run.id == ParkedRun.run_id)
            .where(ParkedRun.answer.is_(None), Run.cancel_requested.is_not(None))
            .limit(limit)
        )
        return [(run_id, str(reason)) for run_id, reason in rows]

    async def next_deadline(self) -> datetime | None:
        """The nearest deadline of an unanswered parked run."""
        value: datetime | None = await self.session.scalar(
            select(func.min(ParkedRun.deadline)).where(ParkedRun.answer.is_(None))
        )
        if value is not None and value.tzinfo is None:  # SQLite's MIN gives the stored text back naive
            value = value.replace(tzinfo=UTC)
        return value

    async def count_for(self, principal_id: str) -> int:
        """The principal's parked runs waiting for an answer."""
        count = await self.session.scalar(
            select(func.count())
            .select_from(ParkedRun)
            .where(ParkedRun.principal_id == principal_id, ParkedRun.answer.is_(None))
        )
        return int(count or 0)

    async def counts(self) -> dict[str, int]:
        """Every principal's parked runs waiting for an answer."""
        rows = await self.session.execute(
            select(ParkedRun.principal_id, func.count())
            .where(ParkedRun.answer.is_(None))
            .group_by(ParkedRun.principal_id)
        )
        return {principal: int(n) for principal, n in rows}

    async def waiting_in(self, conversation_id: str) -> list[str]:
        """The conversation's parked runs not yet answered."""
        rows = await self.session.scalars(
            select(ParkedRun.run_id).where(ParkedRun.conversation_id == conversation_id, ParkedRun.answer.is_(None))
        )
        return list(rows)
