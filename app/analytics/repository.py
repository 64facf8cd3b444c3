"""Every analytics query: counts, sums and percentiles computed by the database, on SQLite and PostgreSQL.

Each figure comes from its own table and is placed in time by its own moment:
runs by ``runs.created_at``, messages by ``messages.created_at``, model calls
(tokens, latency, failures) by ``model_calls.started_at``. Tokens are what the
providers billed, call by call: a message holds only the usage of the call that
wrote it, while calls that ended in tool calls and a selector's calls are billed
too. A cancelled call counts as a call, not as a failure. A range is half-open,
``since <= t < until``.

Buckets are UTC hours or days. SQLite stores these times as UTC text, which
``strftime`` truncates; PostgreSQL truncates a ``timestamptz`` in the UTC zone
(``date_trunc`` alone would use the session's time zone).

Percentiles are nearest-rank, exact on both dialects: of the n values sorted
ascending, the p-th percentile is the one at rank ⌈p·n/100⌉ (so the median
of 1..100 is 50 and its p95 is 95; of one value, both are that value).
``row_number()`` and ``count()`` windows rank the values, as PostgreSQL's
``percentile_cont`` (an interpolation) has no SQLite counterpart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    SQLColumnExpression,
    Subquery,
    and_,
    case,
    func,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.schemas import Bucket
from app.conversations.models import Conversation, Message
from app.core.db import UTCDateTime
from app.core.errors import NotFound
from app.core.vocabulary import RUN_STATUSES
from app.runs.models import ModelCallRecord, Run

PERCENTILES = (50, 95)

AnySelect = Select[*tuple[Any, ...]]

# (bucket start or None when unbucketed, team / agent / conversation id)
GroupKey = tuple[datetime | None, str]


@dataclass(frozen=True, slots=True)
class Window:
    since: datetime
    until: datetime
    bucket: Bucket


@dataclass(slots=True)
class GroupStats:
    """The figures of one group (a bucket and a team, agent or conversation)."""

    runs: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # some calls' counts were estimated (the provider reported none)
    model_calls: int = 0
    failed_calls: int = 0
    latency_ms: dict[int, int | None] = field(default_factory=lambda: dict.fromkeys(PERCENTILES))
    ttft_ms: dict[int, int | None] = field(default_factory=lambda: dict.fromkeys(PERCENTILES))

    @property
    def run_total(self) -> int:
        return sum(self.runs.values())


@dataclass(frozen=True, slots=True)
class ConversationTotals:
    stats: GroupStats
    first_activity_at: datetime | None
    last_activity_at: datetime | None


def _select(bucket: ColumnElement[datetime] | None, *columns: SQLColumnExpression[Any]) -> AnySelect:
    """The rows to aggregate: a ``bucket`` column first when bucketed, then a ``key`` and the values."""
    return select(*([bucket] if bucket is not None else []), *columns)


def _nearest_rank(p: int, n: ColumnElement[Any]) -> ColumnElement[Any]:
    """⌈p·n/100⌉ in integer arithmetic (``//`` is integer division on both dialects)."""
    return (n * p + 99) // 100


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- public queries --------------------------------------------------------------------------

    async def by_team(
        self, principal_id: str, window: Window, *, team: str | None = None
    ) -> dict[GroupKey, GroupStats]:
        runs = _select(self._bucket(window, Run.created_at), Run.team_name.label("key"), Run.status).where(
            Run.principal_id == principal_id, *self._in(window, Run.created_at)
        )
        messages = (
            _select(
                self._bucket(window, Message.created_at),
                Run.team_name.label("key"),
            )
            .select_from(Message)
            .join(Run, Run.id == Message.run_id)
            .where(Message.principal_id == principal_id, *self._in(window, Message.created_at))
        )
        calls = self._calls(self._bucket(window, ModelCallRecord.started_at), ModelCallRecord.team_name).where(
            ModelCallRecord.principal_id == principal_id, *self._in(window, ModelCallRecord.started_at)
        )
        if team is not None:
            runs = runs.where(Run.team_name == team)
            messages = messages.where(Run.team_name == team)
            calls = calls.where(ModelCallRecord.team_name == team)
        return await self._collect(runs, messages, calls)

    async def by_agent(
        self, principal_id: str, window: Window, *, team: str | None = None, agent: str | None = None
    ) -> dict[GroupKey, GroupStats]:
        messages = _select(
            self._bucket(window, Message.created_at),
            Message.agent.label("key"),
        ).where(Message.principal_id == principal_id, *self._in(window, Message.created_at))
        calls = self._calls(self._bucket(window, ModelCallRecord.started_at), ModelCallRecord.agent).where(
            ModelCallRecord.principal_id == principal_id, *self._in(window, ModelCallRecord.started_at)
        )
        if team is not None:
            messages = messages.join(Run, Run.id == Message.run_id).where(Run.team_name == team)
            calls = calls.where(ModelCallRecord.team_name == team)
        if agent is not None:
            messages = messages.where(Message.agent == agent)
            calls = calls.where(ModelCallRecord.agent == agent)
        return await self._collect(None, messages, calls)

    async def conversation(self, principal_id: str, conversation_id: str) -> ConversationTotals:
        owned = await self.session.scalar(
            select(Conversation.id).where(Conversation.id == conversation_id, Conversation.principal_id == principal_id)
        )
        if owned is None:
            raise NotFound(f"No conversation with id '{conversation_id}'.")
        in_conversation = (Run.principal_id == principal_id, Run.conversation_id == conversation_id)
        runs = select(Run.conversation_id.label("key"), Run.status).where(*in_conversation)
        messages = select(Message.conversation_id.label("key")).where(
            Message.principal_id == principal_id, Message.conversation_id == conversation_id
        )
        calls = (
            self._calls(None, Run.conversation_id)
            .join(Run, Run.id == ModelCallRecord.run_id)
            .where(ModelCallRecord.principal_id == principal_id, *in_conversation)
        )
        groups = await self._collect(runs, messages, calls)
        stats = groups.get((None, conversation_id), GroupStats())

        moments = union_all(
            select(Run.created_at.label("at")).where(*in_conversation),
            select(Run.finished_at).where(*in_conversation),
            select(Message.created_at).where(Message.conversation_id == conversation_id),
            select(ModelCallRecord.started_at).join(Run, Run.id == ModelCallRecord.run_id).where(*in_conversation),
        ).subquery()
        first, last = (await self.session.execute(select(func.min(moments.c.at), func.max(moments.c.at)))).one()
        return ConversationTotals(stats, first, last)

    # -- building blocks -------------------------------------------------------------------------

    def _bucket(self, window: Window, column: SQLColumnExpression[datetime]) -> ColumnElement[datetime] | None:
        """The UTC hour or day a time falls in, as a ``bucket`` column; None when unbucketed."""
        if window.bucket == "none":
            return None
        dialect = self.session.get_bind().dialect.name
        if dialect == "sqlite":
            fmt = "%Y-%m-%d %H:00:00" if window.bucket == "hour" else "%Y-%m-%d 00:00:00"
            start: ColumnElement[Any] = func.strftime(fmt, column)
        elif dialect == "postgresql":
            start = func.timezone("UTC", func.date_trunc(window.bucket, func.timezone("UTC", column)))
        else:  # pragma: no cover - the server supports these two
            raise NotImplementedError(f"time buckets on {dialect}")
        return type_coerce(start, UTCDateTime()).label("bucket")

    @staticmethod
    def _in(window: Window, column: SQLColumnExpression[datetime]) -> tuple[ColumnElement[bool], ...]:
        return column >= window.since, column < window.until

    @staticmethod
    def _calls(bucket: ColumnElement[datetime] | None, key: SQLColumnExpression[str]) -> AnySelect:
        code = ModelCallRecord.error_code
        failed = case((or_(code.is_(None), code == "cancelled"), 0), else_=1).label("failed")
        return _select(
            bucket,
            key.label("key"),
            ModelCallRecord.duration_ms,
            ModelCallRecord.ttft_ms,
            ModelCallRecord.prompt_tokens,
            ModelCallRecord.completion_tokens,
            case((ModelCallRecord.usage_estimated, 1), else_=0).label("estimated"),
            failed,
        )

    @staticmethod
    def _groups(sub: Subquery) -> list[ColumnElement[Any]]:
        return [sub.c.bucket, sub.c.key] if "bucket" in sub.c else [sub.c.key]

    @staticmethod
    def _key(row: Any) -> GroupKey:
        return (getattr(row, "bucket", None), row.key)

    async def _collect(
        self, runs: AnySelect | None, messages: AnySelect, calls: AnySelect
    ) -> dict[GroupKey, GroupStats]:
        groups: dict[GroupKey, GroupStats] = {}

        def at(key: GroupKey) -> GroupStats:
            return groups.setdefault(key, GroupStats())

        if runs is not None:
            for row in await self._rows(self._run_counts(runs.subquery())):
                at(self._key(row)).runs = {s: int(getattr(row, s)) for s in RUN_STATUSES if getattr(row, s)}
        for row in await self._rows(self._message_sums(messages.subquery())):
            at(self._key(row)).messages = int(row.messages)
        for row in await self._rows(self._call_stats(calls.subquery())):
            stats = at(self._key(row))
            stats.model_calls, stats.failed_calls = int(row.calls), int(row.failed)
            stats.prompt_tokens, stats.completion_tokens = int(row.prompt_tokens), int(row.completion_tokens)
            stats.usage_estimated = bool(row.estimated)
            stats.latency_ms = {p: getattr(row, f"latency_p{p}") for p in PERCENTILES}
            stats.ttft_ms = {p: getattr(row, f"ttft_p{p}") for p in PERCENTILES}
        return groups

    async def _rows(self, stmt: AnySelect) -> Sequence[Any]:
        rows: Sequence[Any] = (await self.session.execute(stmt)).all()
        return rows

    def _run_counts(self, sub: Subquery) -> AnySelect:
        groups = self._groups(sub)
        by_status = [func.sum(case((sub.c.status == s, 1), else_=0)).label(s) for s in RUN_STATUSES]
        return select(*groups, *by_status).group_by(*groups)

    def _message_sums(self, sub: Subquery) -> AnySelect:
        groups = self._groups(sub)
        return select(*groups, func.count().label("messages")).group_by(*groups)

    def _call_stats(self, sub: Subquery) -> AnySelect:
        """Counts, and nearest-rank percentiles of the answered calls' duration and time to first token."""
        groups = self._groups(sub)
        answered = [*groups, sub.c.failed]
        has_ttft = sub.c.ttft_ms.is_not(None)
        ranked = select(
            *groups,
            sub.c.duration_ms,
            sub.c.ttft_ms,
            sub.c.prompt_tokens,
            sub.c.completion_tokens,
            sub.c.estimated,
            sub.c.failed,
            func.row_number().over(partition_by=answered, order_by=sub.c.duration_ms).label("d_rank"),
            func.count().over(partition_by=answered).label("d_n"),
            func.row_number().over(partition_by=[*answered, has_ttft], order_by=sub.c.ttft_ms).label("t_rank"),
            func.count(sub.c.ttft_ms).over(partition_by=answered).label("t_n"),
        ).subquery()
        r = ranked.c
        outer = self._groups(ranked)
        latency = [
            func.max(case((and_(r.failed == 0, r.d_rank == _nearest_rank(p, r.d_n)), r.duration_ms))).label(
                f"latency_p{p}"
            )
            for p in PERCENTILES
        ]
        ttft = [
            func.max(
                case((and_(r.failed == 0, r.ttft_ms.is_not(None), r.t_rank == _nearest_rank(p, r.t_n)), r.ttft_ms))
            ).label(f"ttft_p{p}")
            for p in PERCENTILES
        ]
        return select(
            *outer,
            func.count().label("calls"),
            func.sum(r.failed).label("failed"),
            func.coalesce(func.sum(r.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(r.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.max(r.estimated), 0).label("estimated"),
            *latency,
            *ttft,
        ).group_by(*outer)
