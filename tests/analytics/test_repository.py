"""The analytics SQL on SQLite and on PostgreSQL: the same tests, once per backend.

Rows are inserted with known times and values; every expectation is computed here
in Python from the same rows (nearest-rank percentiles, UTC truncation, sums), so
a test fails whenever the database computes something else. PostgreSQL sessions
run in an odd time zone (+05:30) to prove that buckets are UTC whatever the session's.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.repository import PERCENTILES, AnalyticsRepository, GroupKey, GroupStats, Window
from app.analytics.schemas import Bucket
from app.conversations.models import Conversation, Message
from app.core.errors import NotFound
from app.core.ids import new_id
from app.runs.models import ModelCallRecord, Run

ALICE, BOB = "alice", "bob"
T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
WIDE = Window(T0 - timedelta(days=30), T0 + timedelta(days=30), "none")


# -- the fixture's rows, and what they should add up to ------------------------------------------


@dataclass(frozen=True)
class Msg:
    agent: str
    at: datetime
    prompt: int
    completion: int


@dataclass(frozen=True)
class Call:
    agent: str
    at: datetime
    duration_ms: int
    ttft_ms: int | None = None
    error: str | None = None
    prompt: int = 0  # what the provider billed for the call: analytics' tokens
    completion: int = 0


class Fixture:
    """Writes conversations, runs, messages and model calls through a session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def conversation(self, principal: str = ALICE) -> str:
        conversation = Conversation(id=new_id("conv"), principal_id=principal, title="t", created_at=T0)
        self.session.add(conversation)
        await self.session.flush()
        return conversation.id

    async def run(
        self,
        conversation_id: str,
        *,
        team: str = "alpha",
        status: str = "succeeded",
        at: datetime = T0,
        finished_at: datetime | None = None,
        principal: str = ALICE,
        messages: Iterable[Msg] = (),
        calls: Iterable[Call] = (),
    ) -> Run:
        run = Run(
            id=new_id("run"),
            principal_id=principal,
            conversation_id=conversation_id,
            team_name=team,
            team_spec={},
            task="task",
            status=status,
            timeout_s=60.0,
            created_at=at,
            finished_at=finished_at,
        )
        self.session.add(run)
        await self.session.flush()
        for position, m in enumerate(messages, start=1):
            self.session.add(
                Message(
                    id=new_id("msg"),
                    conversation_id=conversation_id,
                    run_id=run.id,
                    principal_id=principal,
                    position=position,
                    seq=position,
                    agent=m.agent,
                    type="TextMessage",
                    content="text",
                    payload={},
                    prompt_tokens=m.prompt,
                    completion_tokens=m.completion,
                    created_at=m.at,
                )
            )
        for c in calls:
            self.session.add(
                ModelCallRecord(
                    run_id=run.id,
                    principal_id=principal,
                    team_name=team,
                    agent=c.agent,
                    model="fake/t5",
                    started_at=c.at,
                    duration_ms=c.duration_ms,
                    ttft_ms=c.ttft_ms,
                    error_code=c.error,
                    prompt_tokens=c.prompt,
                    completion_tokens=c.completion,
                )
            )
        await self.session.flush()
        return run


def nearest_rank(values: list[int], p: int) -> int | None:
    """The value at rank ⌈p·n/100⌉ of the sorted values: the definition the API documents."""
    if not values:
        return None
    rank = -(-p * len(values) // 100)
    return sorted(values)[rank - 1]


def truncate(at: datetime, bucket: Bucket) -> datetime | None:
    if bucket == "none":
        return None
    hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour.replace(hour=0) if bucket == "day" else hour


def summary(groups: dict[GroupKey, GroupStats]) -> dict[GroupKey, tuple[dict[str, int], int, int, int, int, int]]:
    """The countable figures of each group (percentiles are checked on their own)."""
    return {
        key: (s.runs, s.messages, s.prompt_tokens, s.completion_tokens, s.model_calls, s.failed_calls)
        for key, s in groups.items()
    }


def repo(session: AsyncSession) -> AnalyticsRepository:
    return AnalyticsRepository(session)


# -- percentiles ---------------------------------------------------------------------------------


async def test_the_percentiles_of_1_to_100_are_50_and_95(session: AsyncSession) -> None:
    fx = Fixture(session)
    durations = list(range(1, 101))
    random.Random(7).shuffle(durations)
    calls = [Call("writer", T0, d, ttft_ms=d * 2) for d in durations]
    await fx.run(await fx.conversation(), calls=calls)

    stats = (await repo(session).by_agent(ALICE, WIDE))[(None, "writer")]

    assert stats.model_calls == 100
    assert stats.failed_calls == 0
    assert stats.latency_ms == {50: 50, 95: 95}
    assert stats.ttft_ms == {50: 100, 95: 190}


@pytest.mark.parametrize("sizes", [(1, 2, 3, 4, 5, 19, 20, 21), (99, 100, 101, 250)])
async def test_percentiles_are_nearest_rank_per_group_over_answered_calls(
    session: AsyncSession, sizes: tuple[int, ...]
) -> None:
    """Each agent is its own group; failed calls count but never enter a latency percentile."""
    fx = Fixture(session)
    rng = random.Random(sum(sizes))
    conversation = await fx.conversation()
    expected: dict[str, tuple[list[int], list[int]]] = {}
    calls: list[Call] = []
    for n in sizes:
        agent = f"agent_{n}"
        durations = [rng.randint(1, 5000) for _ in range(n)]  # duplicates included
        ttfts = [d // 3 if i % 3 else None for i, d in enumerate(durations)]  # some calls did not stream
        calls += [
            Call(agent, T0 + timedelta(seconds=i), d, t) for i, (d, t) in enumerate(zip(durations, ttfts, strict=True))
        ]
        # a slow failure that would move every percentile if it were counted
        calls.append(Call(agent, T0, 10_000_000, ttft_ms=10_000_000, error="model_timeout"))
        expected[agent] = (durations, [t for t in ttfts if t is not None])
    rng.shuffle(calls)
    await fx.run(conversation, calls=calls)

    groups = await repo(session).by_agent(ALICE, WIDE)

    assert set(groups) == {(None, agent) for agent in expected}
    for agent, (answered, streamed) in expected.items():
        stats = groups[(None, agent)]
        assert (stats.model_calls, stats.failed_calls) == (len(answered) + 1, 1), agent
        assert stats.latency_ms == {p: nearest_rank(answered, p) for p in PERCENTILES}, agent
        assert stats.ttft_ms == {p: nearest_rank(streamed, p) for p in PERCENTILES}, agent


async def test_a_group_of_only_failed_calls_has_no_percentiles(session: AsyncSession) -> None:
    fx = Fixture(session)
    await fx.run(await fx.conversation(), calls=[Call("critic", T0, 40, error="model_error")] * 2)

    stats = (await repo(session).by_agent(ALICE, WIDE))[(None, "critic")]

    assert (stats.model_calls, stats.failed_calls) == (2, 2)
    assert stats.latency_ms == {50: None, 95: None}
    assert stats.ttft_ms == {50: None, 95: None}


# -- time buckets and ranges ---------------------------------------------------------------------

MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC)
AROUND_MIDNIGHT = [
    MIDNIGHT - timedelta(hours=2),  # before the window: never counted
    MIDNIGHT - timedelta(hours=1),  # the window's first instant: counted
    MIDNIGHT - timedelta(microseconds=1),
    MIDNIGHT,
    MIDNIGHT + timedelta(minutes=59, seconds=59),
    MIDNIGHT + timedelta(hours=1, microseconds=1),
    MIDNIGHT + timedelta(hours=2),  # the window's end: never counted
]
AROUND = Window(MIDNIGHT - timedelta(hours=1), MIDNIGHT + timedelta(hours=2), "none")


@pytest.mark.parametrize("bucket", ["hour", "day", "none"])
async def test_buckets_are_utc_hours_and_days_and_the_range_is_half_open(session: AsyncSession, bucket: Bucket) -> None:
    fx = Fixture(session)
    conversation = await fx.conversation()
    rows: list[tuple[str, str, datetime, Msg, Call]] = []
    for i, at in enumerate(AROUND_MIDNIGHT):
        for team, agent in (("alpha", "writer"), ("beta", "critic")):
            if team == "beta" and i % 2:
                continue  # beta is quieter, so the teams' figures differ
            status = ("succeeded", "failed", "cancelled")[i % 3]
            msg = Msg(agent, at, prompt=10 + i, completion=100 * (i + 1))
            failed = status == "failed"
            billed = {} if failed else {"prompt": msg.prompt, "completion": msg.completion}
            call = Call(agent, at, duration_ms=5 * (i + 1), error="model_error" if failed else None, **billed)
            await fx.run(conversation, team=team, status=status, at=at, messages=[msg], calls=[call])
            rows.append((team, status, at, msg, call))
    window = Window(AROUND.since, AROUND.until, bucket)

    teams = await repo(session).by_team(ALICE, window)
    agents = await repo(session).by_agent(ALICE, window)

    counted = [r for r in rows if window.since <= r[2] < window.until]
    assert 0 < len(counted) < len(rows)
    runs: dict[GroupKey, Counter[str]] = defaultdict(Counter)
    sums: dict[GroupKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    agent_sums: dict[GroupKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for team, status, at, msg, call in counted:
        key = (truncate(at, bucket), team)
        runs[key][status] += 1
        for figures in (sums[key], agent_sums[(truncate(at, bucket), msg.agent)]):
            figures[0] += 1
            figures[1] += call.prompt  # tokens are the calls' (a failed call billed nothing here)
            figures[2] += call.completion
            figures[3] += 1
            figures[4] += call.error is not None
    assert summary(teams) == {key: (dict(runs[key]), *sums[key]) for key in sums}
    assert summary(agents) == {key: ({}, *figures) for key, figures in agent_sums.items()}
    for start, _team in teams:
        if bucket == "none":
            assert start is None
        else:
            assert start is not None and start.utcoffset() == timedelta()
    if bucket == "hour":
        assert {key[0] for key in teams} == {MIDNIGHT - timedelta(hours=1), MIDNIGHT, MIDNIGHT + timedelta(hours=1)}
    if bucket == "day":
        assert {key[0] for key in teams} == {MIDNIGHT - timedelta(days=1), MIDNIGHT}


async def test_each_figure_is_placed_by_its_own_time(session: AsyncSession) -> None:
    """A run created before the range whose messages and calls fall inside it: those count, the run not."""
    fx = Fixture(session)
    inside = AROUND.since + timedelta(minutes=5)
    await fx.run(
        await fx.conversation(),
        at=AROUND.since - timedelta(minutes=1),
        messages=[Msg("writer", inside, 3, 4)],
        calls=[Call("writer", inside, 9, prompt=3, completion=4)],
    )

    teams = await repo(session).by_team(ALICE, AROUND)

    assert summary(teams) == {(None, "alpha"): ({}, 1, 3, 4, 1, 0)}
    assert teams[(None, "alpha")].run_total == 0


# -- runs by status, filters, principals, conversations ------------------------------------------


async def test_teams_count_their_runs_by_status(session: AsyncSession) -> None:
    fx = Fixture(session)
    statuses = {
        "alpha": ["succeeded", "succeeded", "failed", "timed_out", "running"],
        "beta": ["cancelled", "queued", "awaiting_input", "succeeded"],
    }
    for team, of_team in statuses.items():
        for status in of_team:
            await fx.run(await fx.conversation(), team=team, status=status)

    teams = await repo(session).by_team(ALICE, WIDE)

    assert {key: stats.runs for key, stats in teams.items()} == {
        (None, team): dict(Counter(of_team)) for team, of_team in statuses.items()
    }
    assert {key: stats.run_total for key, stats in teams.items()} == {
        (None, team): len(of_team) for team, of_team in statuses.items()
    }


async def test_team_and_agent_filters(session: AsyncSession) -> None:
    fx = Fixture(session)
    conversation = await fx.conversation()
    for team in ("alpha", "beta"):
        await fx.run(
            conversation,
            team=team,
            messages=[Msg("user", T0, 0, 0), Msg("writer", T0, 5, 7), Msg("critic", T0, 11, 13)],
            calls=[Call("writer", T0, 20, prompt=5, completion=7), Call("critic", T0, 30, error="model_error")],
        )
    r = repo(session)

    # tokens are the calls': the critic's failed call billed none, whatever its message said
    assert summary(await r.by_team(ALICE, WIDE, team="beta")) == {(None, "beta"): ({"succeeded": 1}, 3, 5, 7, 2, 1)}
    assert summary(await r.by_agent(ALICE, WIDE, team="beta")) == {
        (None, "user"): ({}, 1, 0, 0, 0, 0),
        (None, "writer"): ({}, 1, 5, 7, 1, 0),
        (None, "critic"): ({}, 1, 0, 0, 1, 1),
    }
    assert summary(await r.by_agent(ALICE, WIDE, agent="critic")) == {(None, "critic"): ({}, 2, 0, 0, 2, 2)}
    assert summary(await r.by_agent(ALICE, WIDE, team="beta", agent="writer")) == {
        (None, "writer"): ({}, 1, 5, 7, 1, 0)
    }
    assert await r.by_team(ALICE, WIDE, team="gamma") == {}


async def test_another_principals_rows_never_count(session: AsyncSession) -> None:
    fx = Fixture(session)
    theirs = await fx.conversation(BOB)
    await fx.run(
        theirs,
        principal=BOB,
        status="failed",
        messages=[Msg("writer", T0, 50, 60)],
        calls=[Call("writer", T0, 7, prompt=50, completion=60)],
    )
    r = repo(session)

    assert await r.by_team(ALICE, WIDE) == {}
    assert await r.by_agent(ALICE, WIDE) == {}
    with pytest.raises(NotFound):
        await r.conversation(ALICE, theirs)
    # the same rows do count for their owner
    assert summary(await r.by_team(BOB, WIDE)) == {(None, "alpha"): ({"failed": 1}, 1, 50, 60, 1, 0)}
    assert (await r.conversation(BOB, theirs)).stats.messages == 1


async def test_conversation_totals_cover_its_runs_only(session: AsyncSession) -> None:
    fx = Fixture(session)
    mine, other = await fx.conversation(), await fx.conversation()
    first = T0 + timedelta(minutes=1)
    finished = T0 + timedelta(hours=3)
    durations = [12, 40, 7, 33]
    await fx.run(
        mine,
        at=first,
        finished_at=first + timedelta(minutes=1),
        messages=[Msg("user", first, 0, 0), Msg("writer", first + timedelta(seconds=1), 8, 9)],
        calls=[
            Call("writer", first, durations[0], ttft_ms=durations[0] // 2, prompt=8, completion=9),
            Call("writer", first, durations[1], ttft_ms=durations[1] // 2),
        ],
    )
    await fx.run(
        mine,
        status="failed",
        team="beta",
        at=first + timedelta(hours=1),
        finished_at=finished,
        messages=[Msg("critic", first + timedelta(hours=2), 20, 30)],
        calls=[
            Call("critic", first + timedelta(hours=1), durations[2], prompt=20, completion=30),
            Call("critic", first + timedelta(hours=1), durations[3]),
            Call("critic", first + timedelta(hours=1), 999, error="model_error"),
        ],
    )
    await fx.run(other, at=T0, messages=[Msg("writer", T0 + timedelta(days=2), 1, 1)], calls=[Call("writer", T0, 1000)])

    totals = await repo(session).conversation(ALICE, mine)

    stats = totals.stats
    assert stats.runs == {"succeeded": 1, "failed": 1}
    assert (stats.messages, stats.prompt_tokens, stats.completion_tokens) == (3, 28, 39)
    assert (stats.model_calls, stats.failed_calls) == (5, 1)
    assert stats.latency_ms == {p: nearest_rank(durations, p) for p in PERCENTILES}
    assert stats.ttft_ms == {p: nearest_rank([d // 2 for d in durations[:2]], p) for p in PERCENTILES}
    assert totals.first_activity_at == first
    assert totals.last_activity_at == finished


async def test_a_conversation_without_runs_has_zero_totals(session: AsyncSession) -> None:
    fx = Fixture(session)
    conversation = await fx.conversation()

    totals = await repo(session).conversation(ALICE, conversation)

    assert summary({(None, conversation): totals.stats}) == {(None, conversation): ({}, 0, 0, 0, 0, 0)}
    assert (totals.first_activity_at, totals.last_activity_at) == (None, None)
    with pytest.raises(NotFound):
        await repo(session).conversation(ALICE, "conv_missing")
