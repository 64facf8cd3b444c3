"""A team's id (app/patches/autogen_team_id.py): the suffix AutoGen's runtime logs its agents under,
which the parking log filter (app/runtime/parking.py) matches."""

from __future__ import annotations

import logging

import pytest
from autogen_agentchat.agents import UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken

from app.patches.autogen_team_id import team_id


class Boom(Exception):
    pass


async def test_the_runtime_logs_a_failing_agent_under_the_team_id(caplog: pytest.LogCaptureFixture) -> None:
    async def refuse(prompt: str, token: CancellationToken | None) -> str:
        raise Boom("no answer")

    team = RoundRobinGroupChat(
        [UserProxyAgent("human", input_func=refuse)], termination_condition=MaxMessageTermination(3)
    )
    ident = team_id(team)
    assert len(ident) == 36  # a uuid4, unique per team
    with caplog.at_level(logging.ERROR, logger="autogen_core"), pytest.raises(RuntimeError):
        async for _ in team.run_stream(task="hello"):
            pass
    records = [r for r in caplog.records if r.name == "autogen_core"]
    assert records and all(ident in r.getMessage() for r in records)
    assert any(f"human_{ident}" in r.getMessage() for r in records)
    assert team_id(RoundRobinGroupChat([UserProxyAgent("other")])) != ident
