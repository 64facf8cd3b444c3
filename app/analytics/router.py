"""`/v1/analytics`: runs, messages, tokens, model-call latency and failures per team, agent and conversation.

Only the caller's own runs, messages and model calls count. The range is
half-open (``since <= t < until``) in UTC; it defaults to the last seven days.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from app.analytics.repository import AnalyticsRepository, GroupStats, Window
from app.analytics.schemas import (
    AgentAnalytics,
    AgentStats,
    Bucket,
    ConversationAnalytics,
    ModelCallStats,
    Percentiles,
    RunCounts,
    TeamAnalytics,
    TeamStats,
)
from app.api.deps import PrincipalDep, SessionDep
from app.core.db import utcnow
from app.core.errors import AppError, FieldError, problem_responses
from app.runs.schemas import Usage

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

DEFAULT_RANGE = timedelta(days=7)
MAX_BUCKETS = 1000
BUCKET_SIZE = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class InvalidQuery(AppError):
    """A query parameter that parses but makes no sense (rendered like FastAPI's own 422s)."""

    status, code, title = 422, "invalid_request", "Invalid request"

    @classmethod
    def at(cls, name: str, msg: str, *, type_: str) -> InvalidQuery:
        return cls(
            f"Invalid value at query.{name}: {msg}", errors=[FieldError(loc=["query", name], msg=msg, type=type_)]
        )


# what pydantic would read as seconds since 1970 (`until=0.5` is 1970-01-01T00:00:00.5Z)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


def _iso_8601(value: Any) -> Any:
    """Only ISO 8601 text: a number is refused, not taken as a Unix time."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise PydanticCustomError(
            "datetime_from_number", "Input should be an ISO 8601 date-time, such as 2026-11-24T10:00:00Z, not a number"
        )
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]


def _utc(value: datetime, name: str) -> datetime:
    """An aware time in UTC; a time without an offset is taken to be UTC."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
        raise InvalidQuery.at(name, "is out of range", type_="datetime_out_of_range") from None


def _floor(value: datetime, bucket: Bucket) -> datetime:
    start = value.replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if bucket == "day" else start


async def analytics_window(
    since: Annotated[
        IsoDateTime | None,
        Query(
            description="Start of the range (included), ISO 8601; no offset means UTC. Default: 7 days before `until`."
        ),
    ] = None,
    until: Annotated[
        IsoDateTime | None,
        Query(description="End of the range (excluded), ISO 8601; no offset means UTC. Default: now."),
    ] = None,
    bucket: Annotated[
        Bucket,
        Query(description=f"Group by UTC `hour` or `day` (at most {MAX_BUCKETS} buckets), or `none`."),
    ] = "day",
) -> Window:
    end = _utc(until, "until") if until is not None else utcnow()
    if since is not None:
        start = _utc(since, "since")
    elif end - datetime.min.replace(tzinfo=UTC) >= DEFAULT_RANGE:
        start = end - DEFAULT_RANGE
    else:
        raise InvalidQuery.at("until", "is too early for the default range; give since", type_="invalid_range")
    if start >= end:
        raise InvalidQuery.at("since", "must be before until", type_="invalid_range")
    if bucket != "none":
        buckets = math.ceil((end - _floor(start, bucket)) / BUCKET_SIZE[bucket])
        if buckets > MAX_BUCKETS:
            raise InvalidQuery.at(
                "bucket",
                f"the range spans {buckets} buckets of a {bucket}; at most {MAX_BUCKETS}: "
                "use a coarser bucket or a shorter range",
                type_="too_many_buckets",
            )
    return Window(start, end, bucket)


WindowDep = Annotated[Window, Depends(analytics_window)]
NameFilter = Annotated[str | None, Query(max_length=64, description="Only this name.")]


def _percentiles(values: dict[int, int | None]) -> Percentiles:
    return Percentiles(p50=values[50], p95=values[95])


def _usage(stats: GroupStats) -> Usage:
    return Usage(
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        total_tokens=stats.prompt_tokens + stats.completion_tokens,
        estimated=stats.usage_estimated,
    )


def _calls(stats: GroupStats) -> ModelCallStats:
    return ModelCallStats(
        count=stats.model_calls,
        failed=stats.failed_calls,
        latency_ms=_percentiles(stats.latency_ms),
        ttft_ms=_percentiles(stats.ttft_ms),
    )


def _runs(stats: GroupStats) -> RunCounts:
    return RunCounts(total=stats.run_total, **stats.runs)


def _rows(
    groups: dict[tuple[datetime | None, str], GroupStats], window: Window
) -> list[tuple[datetime, str, GroupStats]]:
    rows = [(bucket or window.since, key, stats) for (bucket, key), stats in groups.items()]
    return sorted(rows, key=lambda row: (row[0], row[1]))


@router.get(
    "/teams",
    name="get_team_analytics",
    summary="Runs, messages, tokens, latency and failures per team and time bucket",
    responses=problem_responses(422),
)
async def get_team_analytics(
    session: SessionDep, principal: PrincipalDep, window: WindowDep, team: NameFilter = None
) -> TeamAnalytics:
    groups = await AnalyticsRepository(session).by_team(principal.id, window, team=team)
    data = [
        TeamStats(
            bucket_start=bucket_start,
            team=name,
            runs=_runs(stats),
            messages=stats.messages,
            usage=_usage(stats),
            model_calls=_calls(stats),
        )
        for bucket_start, name, stats in _rows(groups, window)
    ]
    return TeamAnalytics(since=window.since, until=window.until, bucket=window.bucket, data=data)


@router.get(
    "/agents",
    name="get_agent_analytics",
    summary="Messages, tokens, latency and failures per agent and time bucket",
    responses=problem_responses(422),
)
async def get_agent_analytics(
    session: SessionDep, principal: PrincipalDep, window: WindowDep, team: NameFilter = None, agent: NameFilter = None
) -> AgentAnalytics:
    groups = await AnalyticsRepository(session).by_agent(principal.id, window, team=team, agent=agent)
    data = [
        AgentStats(
            bucket_start=bucket_start,
            agent=name,
            messages=stats.messages,
            usage=_usage(stats),
            model_calls=_calls(stats),
        )
        for bucket_start, name, stats in _rows(groups, window)
    ]
    return AgentAnalytics(since=window.since, until=window.until, bucket=window.bucket, data=data)


@router.get(
    "/conversations/{conversation_id}",
    name="get_conversation_analytics",
    summary="Totals of one conversation: runs, messages, tokens, latency and failures",
    responses=problem_responses(404),
)
async def get_conversation_analytics(
    conversation_id: str, session: SessionDep, principal: PrincipalDep
) -> ConversationAnalytics:
    totals = await AnalyticsRepository(session).conversation(principal.id, conversation_id)
    stats = totals.stats
    return ConversationAnalytics(
        conversation_id=conversation_id,
        runs=_runs(stats),
        messages=stats.messages,
        usage=_usage(stats),
        model_calls=_calls(stats),
        first_activity_at=totals.first_activity_at,
        last_activity_at=totals.last_activity_at,
    )
