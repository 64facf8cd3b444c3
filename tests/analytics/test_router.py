"""`/v1/analytics` on runs made through the API with the fake model.

Every test starts runs through ``/v1/runs/wait`` (teams of different shapes, a
continued conversation, a run whose model fails) as ``alice``, and one run as
``bob``. The expected figures are computed here from what the API returns
(``GET /v1/runs``, ``GET /v1/conversations/{id}/messages``) and, for model
calls, from the stored ``model_calls`` rows; nothing is hard-coded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.runs.models import ModelCallRecord
from tests.conftest import services_of
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.runs import wait_run
from tests.fixtures.specs import agent, team

Headers = dict[str, str]
# the main figures are checked end to end on both backends; the rest on SQLite
BOTH_BACKENDS = pytest.mark.parametrize("app_backend", ["sqlite", "postgresql"], indirect=True)


def nearest_rank(values: list[int], p: int) -> int | None:
    """The value at rank ⌈p·n/100⌉ of the sorted values: the documented definition."""
    if not values:
        return None
    return sorted(values)[-(-p * len(values) // 100) - 1]


@dataclass
class Figures:
    """What analytics should say about one team, agent or conversation."""

    runs: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    failed_calls: int = 0
    durations: list[int] = field(default_factory=list)
    ttfts: list[int] = field(default_factory=list)

    def usage(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "estimated": False,  # the fake model reports its usage
            },
        }

    def run_counts(self) -> dict[str, int]:
        statuses = ("queued", "running", "awaiting_input", "succeeded", "failed", "cancelled", "timed_out")
        return {"total": sum(self.runs.values()), **{s: self.runs[s] for s in statuses}}

    def model_calls(self) -> dict[str, Any]:
        return {
            "count": self.calls,
            "failed": self.failed_calls,
            "latency_ms": {"p50": nearest_rank(self.durations, 50), "p95": nearest_rank(self.durations, 95)},
            "ttft_ms": {"p50": nearest_rank(self.ttfts, 50), "p95": nearest_rank(self.ttfts, 95)},
        }


@dataclass
class Expected:
    teams: defaultdict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    agents: defaultdict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    conversations: defaultdict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    message_times: list[datetime] = field(default_factory=list)


@dataclass
class History:
    alice: Headers
    bob: Headers
    since: datetime
    until: datetime
    alice_runs: list[dict[str, Any]]
    bob_run: dict[str, Any]


# -- building the history, and the figures it should give ---------------------------------------


def single(team_name: str, member: dict[str, Any]) -> dict[str, Any]:
    return team(team_name, kind="single", members=[member], max_messages=None)


@pytest.fixture
async def history(app: FastAPI, client: httpx.AsyncClient) -> History:
    alice, bob = await api_key_headers(app, "alice"), await api_key_headers(app, "bob")
    since = datetime.now(UTC) - timedelta(seconds=1)
    # a few milliseconds a word, so that latencies and times to first token differ from zero
    pair = team("alpha", model="fake/t5-f3-d1", max_messages=3)
    first = await wait_run(client, headers=alice, team=pair)
    runs = [
        first,
        # the same conversation goes on: two runs in one conversation
        await wait_run(client, headers=alice, team=pair, task="Go on.", conversation_id=first["conversation_id"]),
        await wait_run(client, headers=alice, team=single("beta", agent("solo", "fake/t9-f2-d1"))),
        await wait_run(
            client,
            headers=alice,
            team=single(
                "beta",
                agent(
                    "solo",
                    "fake/t4",
                    tools=["calculator"],
                    model_options={
                        "script": [
                            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
                            {"text": "It is 42."},
                        ]
                    },
                ),
            ),
        ),
        await wait_run(
            client,
            headers=alice,
            team=single("gamma", agent("broken", "fake/t5", model_options={"script": [{"error": "boom"}]})),
        ),
    ]
    assert Counter(r["status"] for r in runs) == {"succeeded": 4, "failed": 1}
    bob_run = await wait_run(client, headers=bob, team=single("delta", agent("solo", "fake/t7")))
    assert bob_run["status"] == "succeeded"
    return History(alice, bob, since, datetime.now(UTC) + timedelta(seconds=1), runs, bob_run)


async def all_messages(client: httpx.AsyncClient, headers: Headers, conversation_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await client.get(
            f"/v1/conversations/{conversation_id}/messages", params={"after": after, "limit": 500}, headers=headers
        )
        assert r.status_code == 200, r.text
        page = r.json()
        messages += page["data"]
        if page["next_after"] is None:
            return messages
        after = page["next_after"]


async def expected_for(app: FastAPI, client: httpx.AsyncClient, headers: Headers, principal: str) -> Expected:
    """The figures, from the runs and messages the API returns and the stored model-call rows (tokens)."""
    r = await client.get("/v1/runs", params={"limit": 200}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    runs = {run["id"]: run for run in r.json()["data"]}
    expected = Expected()
    for run in runs.values():
        expected.teams[run["team_name"]].runs[run["status"]] += 1
        expected.conversations[run["conversation_id"]].runs[run["status"]] += 1
    for conversation_id in {run["conversation_id"] for run in runs.values()}:
        for m in await all_messages(client, headers, conversation_id):
            run = runs[m["run_id"]]
            for figures in (
                expected.teams[run["team_name"]],
                expected.agents[m["agent"]],
                expected.conversations[conversation_id],
            ):
                figures.messages += 1
            expected.message_times.append(datetime.fromisoformat(m["created_at"]))
    async with services_of(app).read_sessionmaker() as session:
        calls = (await session.scalars(select(ModelCallRecord).where(ModelCallRecord.principal_id == principal))).all()
    assert calls, "the fake model's calls are recorded"
    for call in calls:
        for figures in (
            expected.teams[call.team_name],
            expected.agents[call.agent],
            expected.conversations[runs[call.run_id]["conversation_id"]],
        ):
            figures.calls += 1
            # tokens are what each call billed (a message holds only its own call's)
            figures.prompt_tokens += call.prompt_tokens
            figures.completion_tokens += call.completion_tokens
            if call.error_code is not None and call.error_code != "cancelled":
                figures.failed_calls += 1
            else:
                figures.durations.append(call.duration_ms)
                if call.ttft_ms is not None:
                    figures.ttfts.append(call.ttft_ms)
    return expected


def window(h: History, bucket: str = "none") -> dict[str, str]:
    return {"since": h.since.isoformat(), "until": h.until.isoformat(), "bucket": bucket}


async def get_ok(client: httpx.AsyncClient, path: str, headers: Headers, **params: str) -> dict[str, Any]:
    r = await client.get(path, params=params, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def without_bucket(rows: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {row[name]: {k: v for k, v in row.items() if k not in ("bucket_start", name)} for row in rows}


# -- totals equal the sums of what is stored -----------------------------------------------------


@BOTH_BACKENDS
async def test_team_totals_equal_the_sums_of_the_stored_runs_and_messages(
    app: FastAPI, client: httpx.AsyncClient, history: History
) -> None:
    expected = await expected_for(app, client, history.alice, "alice")

    body = await get_ok(client, "/v1/analytics/teams", history.alice, **window(history))

    assert body["bucket"] == "none"
    assert datetime.fromisoformat(body["since"]) == history.since
    assert datetime.fromisoformat(body["until"]) == history.until
    assert [row["team"] for row in body["data"]] == ["alpha", "beta", "gamma"]
    assert {row["bucket_start"] for row in body["data"]} == {body["since"]}
    assert without_bucket(body["data"], "team") == {
        name: {"runs": f.run_counts(), "model_calls": f.model_calls(), **f.usage()}
        for name, f in expected.teams.items()
    }
    gamma = next(row for row in body["data"] if row["team"] == "gamma")
    assert gamma["runs"]["failed"] == 1
    assert gamma["model_calls"]["failed"] >= 1
    assert all(row["usage"]["prompt_tokens"] > 0 < row["usage"]["completion_tokens"] for row in body["data"][:2])


@BOTH_BACKENDS
async def test_agent_totals_equal_the_sums_of_the_stored_messages(
    app: FastAPI, client: httpx.AsyncClient, history: History
) -> None:
    expected = await expected_for(app, client, history.alice, "alice")

    body = await get_ok(client, "/v1/analytics/agents", history.alice, **window(history))

    assert [row["agent"] for row in body["data"]] == sorted(expected.agents)
    assert {"user", "writer", "critic", "solo", "broken"} <= set(expected.agents)
    assert without_bucket(body["data"], "agent") == {
        name: {"model_calls": f.model_calls(), **f.usage()} for name, f in expected.agents.items()
    }
    # agents and teams are two cuts of the same messages
    teams = await get_ok(client, "/v1/analytics/teams", history.alice, **window(history))
    assert sum(row["messages"] for row in body["data"]) == sum(row["messages"] for row in teams["data"])
    for figure in ("prompt_tokens", "completion_tokens"):
        assert sum(row["usage"][figure] for row in body["data"]) == sum(row["usage"][figure] for row in teams["data"])


@BOTH_BACKENDS
async def test_conversation_totals_equal_the_sums_of_its_runs_and_messages(
    app: FastAPI, client: httpx.AsyncClient, history: History
) -> None:
    expected = await expected_for(app, client, history.alice, "alice")
    continued = history.alice_runs[0]["conversation_id"]
    assert sum(expected.conversations[continued].runs.values()) == 2

    for conversation_id, f in expected.conversations.items():
        body = await get_ok(client, f"/v1/analytics/conversations/{conversation_id}", history.alice)
        first, last = body.pop("first_activity_at"), body.pop("last_activity_at")
        assert body == {
            "conversation_id": conversation_id,
            "runs": f.run_counts(),
            "model_calls": f.model_calls(),
            **f.usage(),
        }
        runs = [r for r in history.alice_runs if r["conversation_id"] == conversation_id]
        assert datetime.fromisoformat(first) == min(datetime.fromisoformat(r["created_at"]) for r in runs)
        assert datetime.fromisoformat(last) == max(datetime.fromisoformat(r["finished_at"]) for r in runs)


@BOTH_BACKENDS
@pytest.mark.parametrize(("bucket", "size"), [("hour", timedelta(hours=1)), ("day", timedelta(days=1))])
async def test_buckets_add_up_to_the_totals(
    app: FastAPI, client: httpx.AsyncClient, history: History, bucket: str, size: timedelta
) -> None:
    expected = await expected_for(app, client, history.alice, "alice")

    body = await get_ok(client, "/v1/analytics/teams", history.alice, **window(history, bucket))

    assert body["bucket"] == bucket
    starts = {datetime.fromisoformat(row["bucket_start"]) for row in body["data"]}
    for start in starts:
        assert start.utcoffset() == timedelta()
        assert (start - datetime(2000, 1, 1, tzinfo=UTC)) % size == timedelta()
        assert history.since - size < start < history.until
    message_buckets = {
        datetime(2000, 1, 1, tzinfo=UTC) + (t - datetime(2000, 1, 1, tzinfo=UTC)) // size * size
        for t in expected.message_times
    }
    assert message_buckets <= starts
    totals: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for row in body["data"]:
        totals[row["team"]].update(
            {
                "messages": row["messages"],
                "prompt_tokens": row["usage"]["prompt_tokens"],
                "completion_tokens": row["usage"]["completion_tokens"],
                "runs": row["runs"]["total"],
                "failed_runs": row["runs"]["failed"],
                "calls": row["model_calls"]["count"],
            }
        )
    assert totals == {
        name: Counter(
            messages=f.messages,
            prompt_tokens=f.prompt_tokens,
            completion_tokens=f.completion_tokens,
            runs=sum(f.runs.values()),
            failed_runs=f.runs["failed"],
            calls=f.calls,
        )
        for name, f in expected.teams.items()
    }


async def test_team_and_agent_filters(app: FastAPI, client: httpx.AsyncClient, history: History) -> None:
    expected = await expected_for(app, client, history.alice, "alice")

    beta = await get_ok(client, "/v1/analytics/teams", history.alice, team="beta", **window(history))
    solo = await get_ok(client, "/v1/analytics/agents", history.alice, agent="solo", **window(history))
    alpha_agents = await get_ok(client, "/v1/analytics/agents", history.alice, team="alpha", **window(history))

    assert [row["team"] for row in beta["data"]] == ["beta"]
    assert beta["data"][0]["runs"]["total"] == sum(expected.teams["beta"].runs.values()) == 2
    assert without_bucket(solo["data"], "agent") == {
        "solo": {"model_calls": expected.agents["solo"].model_calls(), **expected.agents["solo"].usage()}
    }
    assert [row["agent"] for row in alpha_agents["data"]] == ["critic", "user", "writer"]
    assert sum(row["messages"] for row in alpha_agents["data"]) == expected.teams["alpha"].messages


# -- principals ----------------------------------------------------------------------------------


@BOTH_BACKENDS
async def test_another_principals_runs_never_show_up(app: FastAPI, client: httpx.AsyncClient, history: History) -> None:
    bob_expected = await expected_for(app, client, history.bob, "bob")
    conversation = history.alice_runs[0]["conversation_id"]

    for bucket in ("none", "hour"):
        teams = await get_ok(client, "/v1/analytics/teams", history.bob, **window(history, bucket))
        agents = await get_ok(client, "/v1/analytics/agents", history.bob, **window(history, bucket))
        assert [row["team"] for row in teams["data"]] == ["delta"]
        assert [row["agent"] for row in agents["data"]] == ["solo", "user"]
        assert teams["data"][0]["messages"] == bob_expected.teams["delta"].messages
        assert teams["data"][0]["runs"]["total"] == 1
    for name in ("alpha", "beta", "gamma"):
        filtered = await get_ok(client, "/v1/analytics/teams", history.bob, team=name, **window(history))
        assert filtered["data"] == []
    assert_problem(
        await client.get(f"/v1/analytics/conversations/{conversation}", headers=history.bob), 404, "not_found"
    )
    # and bob's run is not in alice's figures: her solo agent has only her own messages
    alice_teams = await get_ok(client, "/v1/analytics/teams", history.alice, **window(history))
    assert "delta" not in {row["team"] for row in alice_teams["data"]}
    alice_solo = await get_ok(client, "/v1/analytics/agents", history.alice, agent="solo", **window(history))
    alice_expected = await expected_for(app, client, history.alice, "alice")
    assert alice_solo["data"][0]["messages"] == alice_expected.agents["solo"].messages


async def test_an_unknown_conversation_is_404(client: httpx.AsyncClient, history: History) -> None:
    r = await client.get("/v1/analytics/conversations/conv_nope", headers=history.alice)
    assert_problem(r, 404, "not_found")


# -- ranges --------------------------------------------------------------------------------------


async def test_the_default_range_is_the_last_seven_days_by_day(
    app: FastAPI, client: httpx.AsyncClient, history: History
) -> None:
    expected = await expected_for(app, client, history.alice, "alice")
    before = datetime.now(UTC)

    body = await get_ok(client, "/v1/analytics/teams", history.alice)

    until = datetime.fromisoformat(body["until"])
    assert before <= until <= datetime.now(UTC)
    assert until - datetime.fromisoformat(body["since"]) == timedelta(days=7)
    assert body["bucket"] == "day"
    messages: Counter[str] = Counter()
    for row in body["data"]:
        messages[row["team"]] += row["messages"]
    assert messages == {name: f.messages for name, f in expected.teams.items()}


async def test_a_range_without_activity_is_empty_and_times_are_read_as_utc(
    client: httpx.AsyncClient, history: History
) -> None:
    later = history.until + timedelta(hours=1)
    naive = {"since": later.replace(tzinfo=None).isoformat(), "until": (later + timedelta(hours=1)).isoformat()}
    body = await get_ok(client, "/v1/analytics/teams", history.alice, bucket="hour", **naive)
    assert body["data"] == []
    assert datetime.fromisoformat(body["since"]) == later

    # the same instant written with an offset covers the history again, and is echoed in UTC
    kolkata = history.since.astimezone(timezone(timedelta(hours=5, minutes=30)))
    offset = {"since": kolkata.isoformat(), "until": history.until.isoformat()}
    body = await get_ok(client, "/v1/analytics/agents", history.alice, bucket="none", **offset)
    assert datetime.fromisoformat(body["since"]) == history.since
    assert body["since"].endswith("Z") or body["since"].endswith("+00:00")
    assert body["data"]


@pytest.mark.parametrize(
    ("params", "loc", "type_"),
    [
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since", "invalid_range"),
        ({"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since", "invalid_range"),
        (
            {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z", "bucket": "hour"},
            "bucket",
            "too_many_buckets",
        ),
        (
            {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "bucket": "day"},
            "bucket",
            "too_many_buckets",
        ),
        ({"bucket": "week"}, "bucket", "literal_error"),
        ({"since": "yesterday"}, "since", "datetime_from_date_parsing"),
        # a number is not taken as seconds since 1970
        ({"until": "0.5"}, "until", "datetime_from_number"),
        ({"since": "1700000000", "until": "2026-01-01T00:00:00Z"}, "since", "datetime_from_number"),
        ({"since": "-5", "until": "2026-01-01T00:00:00Z"}, "since", "datetime_from_number"),
        ({"team": "x" * 65}, "team", "string_too_long"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since", "datetime_out_of_range"),
        ({"until": "0001-01-02T00:00:00Z"}, "until", "invalid_range"),
    ],
)
async def test_bad_queries_are_422_problems_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, str], loc: str, type_: str
) -> None:
    for path in ("/v1/analytics/teams", "/v1/analytics/agents"):
        assert_field_error(await client.get(path, params=params), ["query", loc], type_, code="invalid_request")


async def test_the_largest_allowed_ranges_are_accepted(client: httpx.AsyncClient) -> None:
    """1000 buckets are fine (the limit is not off by one), and `none` takes any range."""
    for params in (
        {"since": "2026-01-01T00:00:00Z", "until": "2026-02-11T16:00:00Z", "bucket": "hour"},
        {"since": "2026-01-01T00:30:00Z", "until": "2026-02-11T16:00:00Z", "bucket": "hour"},
        {"since": "2000-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "bucket": "none"},
        {"since": "2026-01-01", "until": "2026-01-02T10:00:00+02:00"},  # a date alone, an offset
    ):
        assert (await client.get("/v1/analytics/teams", params=params)).status_code == 200
    too_many = {"since": "2026-01-01T00:00:00Z", "until": "2026-02-11T16:00:01Z", "bucket": "hour"}
    assert (await client.get("/v1/analytics/teams", params=too_many)).status_code == 422


async def test_openapi_names_and_types_the_operations(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = {
        "/v1/analytics/teams": ("get_team_analytics", "TeamAnalytics", 422),
        "/v1/analytics/agents": ("get_agent_analytics", "AgentAnalytics", 422),
        "/v1/analytics/conversations/{conversation_id}": ("get_conversation_analytics", "ConversationAnalytics", 404),
    }
    for path, (operation_id, schema, error) in operations.items():
        op = spec["paths"][path]["get"]
        assert op["operationId"] == operation_id
        assert op["tags"] == ["analytics"]
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + schema)
        assert "application/problem+json" in op["responses"][str(error)]["content"]
