"""The analytics resources as the API documents them.

Every figure is a count or a sum over the caller's own rows. Percentiles are
nearest-rank (see ``Percentiles``); they are ``null`` where no value was observed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.runs.schemas import Usage

Bucket = Literal["hour", "day", "none"]


class RunCounts(BaseModel):
    """Runs by their current status."""

    total: int
    queued: int = 0
    running: int = 0
    awaiting_input: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0


class Percentiles(BaseModel):
    """Nearest-rank percentiles: the value at rank ⌈p·n/100⌉ of the n values sorted ascending."""

    p50: int | None = Field(default=None, description="Median, in milliseconds; null without values.")
    p95: int | None = Field(default=None, description="95th percentile, in milliseconds; null without values.")


class ModelCallStats(BaseModel):
    count: int = Field(description="Model calls made, answered or failed (retries of one call count once).")
    failed: int = Field(description="Calls that failed for good (after their retries).")
    latency_ms: Percentiles = Field(description="Duration of the answered calls, first request to last token.")
    ttft_ms: Percentiles = Field(description="Time to first token of the answered calls that streamed.")


BUCKET_START = "Start of the UTC hour or day (the range's `since` for `bucket=none`)."
MESSAGES = "Stored messages, the tasks (agent `user`) included."
USAGE = "Sum of the messages' token usage."


class TeamStats(BaseModel):
    bucket_start: datetime = Field(description=BUCKET_START)
    team: str = Field(description="The team's name.")
    runs: RunCounts = Field(description="Runs created in the bucket, by status.")
    messages: int = Field(description=MESSAGES)
    usage: Usage = Field(description=USAGE)
    model_calls: ModelCallStats


class AgentStats(BaseModel):
    bucket_start: datetime = Field(description=BUCKET_START)
    agent: str = Field(description="The agent's name; `user` for tasks and a person's answers.")
    messages: int = Field(description=MESSAGES)
    usage: Usage = Field(description=USAGE)
    model_calls: ModelCallStats


class AnalyticsRange(BaseModel):
    since: datetime = Field(description="Start of the range (included), UTC.")
    until: datetime = Field(description="End of the range (excluded), UTC.")
    bucket: Bucket


class TeamAnalytics(AnalyticsRange):
    data: list[TeamStats] = Field(description="One row per bucket and team with any activity, in time then name order.")


class AgentAnalytics(AnalyticsRange):
    data: list[AgentStats] = Field(
        description="One row per bucket and agent with any activity, in time then name order."
    )


class ConversationAnalytics(BaseModel):
    conversation_id: str
    runs: RunCounts = Field(description="Its runs, by status.")
    messages: int = Field(description=MESSAGES)
    usage: Usage = Field(description=USAGE)
    model_calls: ModelCallStats
    first_activity_at: datetime | None = Field(description="When its first run was created; null without runs.")
    last_activity_at: datetime | None = Field(
        description="The latest of its runs' creation and end, its messages and model calls; null without runs."
    )
