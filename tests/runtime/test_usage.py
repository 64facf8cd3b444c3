"""A run's usage is what its model calls billed: every agent's, the selector's, tool-calling ones; and
``token_budget`` counts the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.agents.schemas import ModelOptions
from app.core.settings import Settings
from app.engine.calls import CallPolicy, ModelCall
from app.engine.factory import BilledTokenBudget, TeamFactory, UsageMeter
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from app.runs.models import ModelCallRecord
from app.teams.schemas import ResolvedTeamSpec
from tests.conftest import make_settings, services_of
from tests.fixtures.runs import wait_run
from tests.fixtures.specs import agent, team


async def calls_of(app: FastAPI, run_id: str) -> list[ModelCallRecord]:
    async with services_of(app).read_sessionmaker() as session:
        rows = await session.scalars(
            select(ModelCallRecord).where(ModelCallRecord.run_id == run_id).order_by(ModelCallRecord.id)
        )
        return list(rows)


def selector_team(**termination: Any) -> dict[str, Any]:
    members = [agent("a", "fake/t3"), agent("b", "fake/t3")]
    return team(kind="selector", members=members, max_messages=4, selector_model="fake/default", **termination)


async def test_run_usage_is_the_sum_of_every_call_the_selectors_and_tool_calls_included(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    run = await wait_run(client, team=selector_team())
    calls = await calls_of(app, run["id"])
    assert {c.agent for c in calls} == {"a", "b", "selector"}
    billed = (sum(c.prompt_tokens for c in calls), sum(c.completion_tokens for c in calls))
    assert (run["usage"]["prompt_tokens"], run["usage"]["completion_tokens"]) == billed
    messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    in_messages = sum(m["usage"]["prompt_tokens"] for m in messages)
    selector = sum(c.prompt_tokens for c in calls if c.agent == "selector")
    assert selector > 0 and in_messages + selector == billed[0], "the selector's calls were left out before"
    # a call that ended in tool calls is billed too, though no stored message carries its usage
    tooling = agent(
        "t",
        "fake/t3",
        tools=["calculator"],
        reflect_on_tool_use=True,
        model_options={
            "script": [
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]},
                {"text": "It is 4."},
            ]
        },
    )
    run = await wait_run(client, team=team(kind="single", members=[tooling], max_messages=None))
    calls = await calls_of(app, run["id"])
    assert len(calls) == 2, (run, [(c.agent, c.error_code) for c in calls])
    assert run["usage"]["completion_tokens"] == sum(c.completion_tokens for c in calls)


async def test_the_token_budget_counts_the_selectors_calls(app: FastAPI, client: httpx.AsyncClient) -> None:
    free = await wait_run(client, team=selector_team())
    first_selection, first_turn = (await calls_of(app, free["id"]))[:2]
    assert (first_selection.agent, first_turn.agent) == ("selector", "a")
    # more than the first speaker's message carries, but no more than its turn billed with the selection
    budget = first_turn.prompt_tokens + first_turn.completion_tokens + 1
    assert first_selection.prompt_tokens + first_selection.completion_tokens >= 1
    run = await wait_run(client, team=selector_team(termination={"token_budget": budget}))
    assert run["status"] == "succeeded"
    spoke = [m for m in (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]]
    assert [m["agent"] for m in spoke] == ["user", "a"], "stopped after the first turn, the selection counted"
    assert "Token budget reached" in (run["stop_reason"] or "")


async def test_billed_token_budget_reads_the_meter_not_the_messages() -> None:
    meter = UsageMeter()
    budget = BilledTokenBudget(100, meter)
    assert await budget([]) is None
    meter.add(ModelCall("selector", "m", None, 0, None, 60, 39, 1))  # type: ignore[arg-type]
    assert await budget([]) is None and not budget.terminated
    meter.add(ModelCall("a", "m", None, 0, None, 1, 0, 1))  # type: ignore[arg-type]
    stop = await budget([])
    assert stop is not None and budget.terminated and "100 tokens" in stop.content
    await budget.reset()
    assert budget.terminated, "the budget is the run's: a swarm that asks a person keeps counting"


def test_the_selector_is_given_a_max_tokens(tmp_path: Path) -> None:
    def selector_args(settings: Settings) -> dict[str, Any]:
        models = ModelRegistry(settings)
        factory = TeamFactory(
            models,
            ToolRegistry(settings),
            default_max_messages=4,
            policy=CallPolicy(10, 0, 0),
            selector_max_tokens=settings.selector_max_tokens,
        )
        spec = ResolvedTeamSpec.model_validate(selector_team() | {"selector_model": "openai_compatible/small"})
        built = factory.build_team(spec)
        client = built._model_client  # type: ignore[attr-defined]
        return dict(client._inner._create_args)

    url = "http://127.0.0.1:9/v1"
    assert selector_args(make_settings(tmp_path, openai_compatible_base_url=url))["max_tokens"] == 64
    unset = make_settings(tmp_path, openai_compatible_base_url=url, selector_max_tokens=None)
    assert "max_tokens" not in selector_args(unset)
    assert ModelOptions(max_tokens=64).max_tokens == 64
