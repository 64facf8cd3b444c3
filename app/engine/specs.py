"""What the engine builds a team from: the shapes it reads, declared here and not borrowed from a domain.

The factory, the graph builder and the model registry need a team's kind, members, edges and
termination, and each member's model settings. They read them through these protocols, so the
engine imports no domain schema: the domain's ``ResolvedTeamSpec`` (``app/teams/schemas.py``) and
``AgentSpec`` (``app/agents/schemas.py``) are of these shapes, and mypy checks it where a run hands
one to ``TeamFactory.build_team``. Every member is read-only here: the engine never changes a spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

# how a scripted error of the fake model fails its call: the first two are retried
ScriptErrorKind = Literal["model_error", "rate_limited", "transient"]


class ScriptToolCallSpec(Protocol):
    """A function call a scripted step of the fake model makes."""

    @property
    def name(self) -> str: ...
    @property
    def arguments(self) -> Mapping[str, Any]: ...


class ScriptStepSpec(Protocol):
    """One scripted call of the fake model (``app/engine/fake.py`` reads it into its own ``ScriptStep``)."""

    @property
    def text(self) -> str | None: ...
    @property
    def reasoning(self) -> str | None: ...
    @property
    def tool_calls(self) -> Sequence[ScriptToolCallSpec] | None: ...
    @property
    def handoff(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def error_kind(self) -> ScriptErrorKind: ...
    @property
    def hang(self) -> bool | None: ...
    @property
    def delay_ms(self) -> int | None: ...


def check_one_action(step: ScriptStepSpec) -> None:
    """A script step does exactly one thing: answers, calls tools, hands off, fails or hangs."""
    actions = (
        ("text", step.text),
        ("tool_calls", step.tool_calls),
        ("handoff", step.handoff),
        ("error", step.error),
        ("hang", step.hang or None),
    )
    chosen = [name for name, value in actions if value is not None]
    if len(chosen) != 1:
        found = ", ".join(chosen) if chosen else "none"
        raise ValueError(f"a script step needs exactly one of text, tool_calls, handoff, error, hang (got: {found})")


class ModelOptionsSpec(Protocol):
    """An agent's model settings."""

    @property
    def temperature(self) -> float | None: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def script(self) -> Sequence[ScriptStepSpec] | None: ...


class MemberSpec(Protocol):
    """One agent of a team, inline, its model named (or absent: the server's default)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> Literal["assistant", "user_proxy"]: ...
    @property
    def description(self) -> str: ...
    @property
    def system_message(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def model_options(self) -> ModelOptionsSpec | None: ...
    @property
    def tools(self) -> Sequence[str]: ...
    @property
    def approve_tools(self) -> Sequence[str]: ...
    @property
    def handoffs(self) -> Sequence[str]: ...
    @property
    def streaming(self) -> bool: ...
    @property
    def reflect_on_tool_use(self) -> bool: ...
    @property
    def max_tool_iterations(self) -> int: ...


class EdgeSpec(Protocol):
    """A directed edge of a graph team, between members by name."""

    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def condition(self) -> str | None: ...
    @property
    def activation(self) -> Literal["all", "any"]: ...


class GraphSpec(Protocol):
    """What a graph is made of besides its agents: the edges and the first speaker."""

    @property
    def edges(self) -> Sequence[EdgeSpec] | None: ...
    @property
    def start(self) -> str | None: ...


class TerminationSpec(Protocol):
    """When a run of the team ends; any condition that is met ends it."""

    @property
    def max_messages(self) -> int | None: ...
    @property
    def text_mention(self) -> str | None: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def token_budget(self) -> int | None: ...


class TeamBuildSpec(GraphSpec, Protocol):
    """A team with every member inline: what ``TeamFactory.build_team`` makes a fresh AutoGen team of."""

    @property
    def kind(self) -> str: ...
    @property
    def members(self) -> Sequence[MemberSpec]: ...
    @property
    def termination(self) -> TerminationSpec: ...
    @property
    def selector_model(self) -> str | None: ...
    @property
    def selector_prompt(self) -> str | None: ...
    @property
    def allow_repeated_speaker(self) -> bool: ...
