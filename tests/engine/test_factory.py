"""The team factory is given what it builds from: its own shapes (``app/engine/specs.py``), no domain schema."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autogen_agentchat.teams import GraphFlow

from app.engine.calls import CallPolicy
from app.engine.factory import TeamFactory, team_signature
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from tests.conftest import make_settings


def member(name: str, text: str) -> SimpleNamespace:
    step = SimpleNamespace(
        text=text,
        reasoning=None,
        tool_calls=None,
        handoff=None,
        error=None,
        error_kind="model_error",
        hang=None,
        delay_ms=None,
    )
    options = SimpleNamespace(temperature=None, max_tokens=None, script=[step])
    return SimpleNamespace(
        name=name,
        kind="assistant",
        description="",
        system_message=None,
        model="fake/t3",
        model_options=options,
        tools=[],
        handoffs=[],
        streaming=False,
        reflect_on_tool_use=False,
        max_tool_iterations=1,
    )


def team(**fields: Any) -> SimpleNamespace:
    stop = SimpleNamespace(max_messages=None, text_mention=None, timeout_s=None, token_budget=None)
    shape: dict[str, Any] = {
        "kind": "round_robin",
        "members": [member("writer", "A draft."), member("critic", "Looks fine.")],
        "termination": stop,
        "selector_model": None,
        "selector_prompt": None,
        "allow_repeated_speaker": False,
        "edges": None,
        "start": None,
    }
    return SimpleNamespace(**(shape | fields))


async def test_a_team_of_plain_shapes_is_built_and_runs(tmp_path: Path) -> None:
    models = ModelRegistry(make_settings(tmp_path))
    factory = TeamFactory(models, ToolRegistry(), default_max_messages=3, policy=CallPolicy(5, 0, 0))
    result = await factory.build_team(team()).run(task="Write.")
    assert [(m.source, m.to_text()) for m in result.messages] == [
        ("user", "Write."),
        ("writer", "A draft."),
        ("critic", "Looks fine."),
    ]
    edge = SimpleNamespace(source="writer", target="critic", condition=None, activation="all")
    graph = team(kind="graph", edges=[edge])
    assert isinstance(factory.build_team(graph), GraphFlow)
    assert team_signature(graph).startswith("graph:") and team_signature(graph) != team_signature(team(kind="graph"))
    await models.aclose()
