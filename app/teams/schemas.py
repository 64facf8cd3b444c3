"""The team spec: kind, members (stored agents by name or inline specs) and termination."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from app.agents.schemas import AgentSpec
from app.core.schemas import Name, StrictModel

TeamKind = Literal["round_robin", "selector", "swarm", "single", "graph", "chain"]


class ChainBranch(StrictModel):
    """One agent (a member, by name) or one stored team (by name or id) that works on a step's input."""

    agent: str | None = Field(default=None, description="A member of the chain, by name.")
    team: str | None = Field(default=None, description="A stored team (not a chain), by name or id.")

    @model_validator(mode="after")
    def _one(self) -> ChainBranch:
        if (self.agent is None) == (self.team is None):
            raise ValueError("give exactly one of `agent` or `team`")
        return self

    @property
    def label(self) -> str:
        return self.agent or self.team or ""


class ChainStep(StrictModel):
    """One step of a chain: an agent, a team, or a parallel group of them on the same input."""

    agent: str | None = Field(default=None, description="A member of the chain, by name.")
    team: str | None = Field(default=None, description="A stored team (not a chain), by name or id.")
    parallel: list[ChainBranch] | None = Field(
        default=None, min_length=2, max_length=16, description="Branches run concurrently on the same input."
    )
    template: str = Field(
        default="{input}",
        max_length=20_000,
        description="The step's task: `{input}` is the previous step's output (the run's task for the first "
        "step), `{task}` the run's task.",
    )

    @model_validator(mode="after")
    def _one(self) -> ChainStep:
        if sum(x is not None for x in (self.agent, self.team, self.parallel)) != 1:
            raise ValueError("give exactly one of `agent`, `team` or `parallel`")
        return self

    @property
    def branches(self) -> list[ChainBranch]:
        if self.parallel is not None:
            return self.parallel
        return [ChainBranch(agent=self.agent, team=self.team)]


class GraphEdge(StrictModel):
    """A directed edge of a `graph` team: after `source` speaks, `target` may."""

    source: Name
    target: Name
    condition: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Take this edge only when the source's message contains this text; absent: always.",
    )
    activation: Literal["all", "any"] = Field(
        default="all",
        description="How the target waits for its incoming edges: all of them (fan-in) or any one.",
    )


class Termination(StrictModel):
    """When a run of the team ends; any condition that is met ends it."""

    max_messages: int | None = Field(
        default=None, ge=1, le=10_000, description="Stop after this many messages, the task included."
    )
    text_mention: str | None = Field(
        default=None, min_length=1, max_length=200, description="Stop when a message contains this text."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, le=86_400, description="Stop gracefully after this many seconds."
    )
    token_budget: int | None = Field(default=None, ge=1, description="Stop once prompt + completion tokens reach this.")


class TeamSpec(StrictModel):
    name: Name
    kind: TeamKind = Field(
        default="round_robin",
        description=(
            "`round_robin` (members take turns), `selector` (a model picks the next speaker), "
            "`swarm` (agents hand off to each other), `single` (one agent answers once), "
            "`graph` (a directed graph of agents: `edges`, conditional edges, fan-out and fan-in), "
            "`chain` (ordered `steps`, each an agent, a team or a parallel group; outputs passed on)."
        ),
    )
    description: str = Field(default="", max_length=2000)
    members: list[str | AgentSpec] = Field(
        min_length=1,
        max_length=32,
        description="Agents of the team: the name of a stored agent, or an inline agent spec.",
    )
    termination: Termination = Field(default_factory=Termination)
    selector_model: str | None = Field(
        default=None, max_length=200, description="Selector teams: the model that picks speakers."
    )
    selector_prompt: str | None = Field(
        default=None,
        max_length=20_000,
        description="Selector teams: prompt with `{roles}`, `{participants}` and `{history}`.",
    )
    allow_repeated_speaker: bool = Field(default=False, description="Selector teams: may one agent speak twice.")
    edges: list[GraphEdge] | None = Field(
        default=None, max_length=200, description="Graph teams: the edges between members, by name."
    )
    steps: list[ChainStep] | None = Field(default=None, max_length=32, description="Chain teams: the steps, in order.")
    synthesizer: str | None = Field(
        default=None, description="Chain teams: a member that writes the final answer from the last step's outputs."
    )
    tolerate_failures: bool = Field(
        default=False,
        description="Chain teams: a failing branch of a parallel step is reported (`branch.failed`) and the "
        "others go on, instead of failing the run.",
    )
    start: str | None = Field(
        default=None, description="Graph teams: the member that speaks first (default: every node without an edge in)."
    )


class ResolvedTeamSpec(TeamSpec):
    """A team spec with every member inline and every model named: what a run executes."""

    members: list[AgentSpec]  # type: ignore[assignment]
    subteams: dict[str, ResolvedTeamSpec] = Field(
        default_factory=dict, description="Chain teams: the stored teams its steps name, resolved."
    )


class TeamRead(TeamSpec):
    id: str = Field(examples=["team_01JDAX3G4F6Q3C9W8R4T0M2N7B"])
    object: Literal["team"] = "team"
    created_at: datetime
    updated_at: datetime


class TeamComponent(StrictModel):
    """A team as an AutoGen declarative component (``ComponentModel``), the format AutoGen Studio galleries use.

    Nested components (participants, model clients, termination conditions) sit inside ``config`` with
    this same shape. See docs/interop.md for what SwarmDirector writes and accepts.
    """

    provider: str = Field(
        min_length=1,
        max_length=300,
        description="The AutoGen class, e.g. `autogen_agentchat.teams.RoundRobinGroupChat`; only an allowlist "
        "is accepted, and nothing is ever loaded from it.",
        examples=["autogen_agentchat.teams.RoundRobinGroupChat"],
    )
    component_type: str | None = Field(default=None, description="`team` for a team.", examples=["team"])
    version: int | None = Field(default=None, description="Version of the component specification.")
    component_version: int | None = Field(default=None, description="Version of the component class.")
    description: str | None = Field(default=None, description="What the component is.")
    label: str | None = Field(default=None, description="A human-readable label.")
    config: dict[str, Any] = Field(
        description="The class's configuration: for a team `name`, `description`, `participants` (agent "
        "components, each with a `model_client` component), `termination_condition` (a component) and the "
        "kind's own settings. Never holds a key."
    )


class TeamImport(StrictModel):
    component: TeamComponent = Field(description="The team component to import, e.g. from a gallery.")
    name: Name | None = Field(default=None, description="Name of the new team; absent: the component's `config.name`.")
