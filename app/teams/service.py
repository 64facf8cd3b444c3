"""Validates agent and team specs against the server's models, tools and stored agents.

Everything a run would trip over is refused here, at create time, as a 422
that names the field (``loc``) at fault.
"""

from __future__ import annotations

from app.agents.repository import AgentRepository
from app.agents.schemas import AgentSpec
from app.core.errors import FieldError, InvalidSpec, NotFound
from app.engine.graphs import graph_of
from app.engine.providers import ModelConfigError, ModelRegistry
from app.engine.tools import ToolRegistry
from app.teams.repository import TeamRepository
from app.teams.schemas import ResolvedTeamSpec, TeamSpec

Loc = list[str | int]
RESERVED_NAMES = frozenset({"user"})


class SpecErrors:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, loc: Loc, msg: str, type_: str) -> None:
        self.errors.append(FieldError(loc=loc, msg=msg, type=type_))

    def raise_if_any(self) -> None:
        if self.errors:
            first = self.errors[0]
            raise InvalidSpec(first.msg, code=first.type, errors=self.errors)


class SpecValidator:
    def __init__(self, models: ModelRegistry, tools: ToolRegistry) -> None:
        self.models = models
        self.tools = tools

    def agent(self, spec: AgentSpec, loc: Loc, errors: SpecErrors) -> AgentSpec:
        """Check one agent; return it with its model resolved to a full ``provider/model``."""
        if spec.name in RESERVED_NAMES:
            errors.add([*loc, "name"], f"'{spec.name}' is reserved for the person giving the task.", "reserved_name")
        if spec.kind == "user_proxy":
            for field in ("model", "model_options", "system_message"):
                if getattr(spec, field) is not None:
                    errors.add([*loc, field], f"A `user_proxy` agent (a person) has no {field}.", "invalid_spec")
            for field in ("tools", "approve_tools", "handoffs"):
                if getattr(spec, field):
                    errors.add([*loc, field], f"A `user_proxy` agent (a person) has no {field}.", "invalid_spec")
            return spec
        resolved = spec
        try:
            ref = self.models.parse(spec.model)
            resolved = spec.model_copy(update={"model": str(ref)})
            if spec.model_options and spec.model_options.script is not None and ref.provider != "fake":
                errors.add(
                    [*loc, "model_options", "script"],
                    "A script is only for the `fake` provider.",
                    "invalid_spec",
                )
            if (spec.tools or spec.handoffs) and not self.models.supports_tools(ref):
                errors.add([*loc, "model"], f"Model '{ref}' cannot call tools.", "model_without_tools")
        except ModelConfigError as exc:
            errors.add([*loc, "model"], str(exc), "unknown_model")
        for j, tool in enumerate(spec.tools):
            if tool not in self.tools:
                known = ", ".join(self.tools.names()) or "none"
                errors.add(
                    [*loc, "tools", j],
                    f"No tool named '{tool}' is registered (known: {known}).",
                    "unknown_tool",
                )
        for j, tool in enumerate(spec.approve_tools):
            if tool not in spec.tools:
                errors.add(
                    [*loc, "approve_tools", j],
                    f"'{tool}' is not one of this agent's tools (`tools`): only those can need approval.",
                    "approval_for_unknown_tool",
                )
        return resolved


class TeamResolver:
    """Resolves a team spec (stored agents by name, default models) into what a run executes."""

    def __init__(self, validator: SpecValidator, agents: AgentRepository, principal_id: str) -> None:
        self.validator = validator
        self.agents = agents
        self.principal_id = principal_id

    async def resolve(self, spec: TeamSpec, loc: Loc) -> ResolvedTeamSpec:
        errors = SpecErrors()
        names = [m for m in spec.members if isinstance(m, str)]
        stored = await self.agents.by_names(self.principal_id, names)
        members: list[AgentSpec] = []
        for i, member in enumerate(spec.members):
            mloc: Loc = [*loc, "members", i]
            if isinstance(member, str):
                row = stored.get(member)
                if row is None:
                    errors.add(mloc, f"No stored agent named '{member}'.", "unknown_agent")
                    continue
                member = AgentSpec.model_validate(row.spec)
            members.append(self.validator.agent(member, mloc, errors))

        seen: set[str] = set()
        for i, agent in enumerate(members):
            if agent.name in seen:
                errors.add([*loc, "members", i, "name"], f"Two members are named '{agent.name}'.", "duplicate_member")
            seen.add(agent.name)

        count = len(spec.members)
        if spec.kind == "single" and count != 1:
            errors.add([*loc, "members"], "A `single` team has exactly one member.", "invalid_team")
        if spec.kind == "selector" and count < 2:
            errors.add([*loc, "members"], "A `selector` team needs at least two members.", "invalid_team")
        if spec.kind != "selector" and (spec.selector_model or spec.selector_prompt):
            errors.add([*loc, "kind"], "`selector_model`/`selector_prompt` are for selector teams.", "invalid_team")

        lowered = {n.lower(): n for n in seen}
        for i, agent in enumerate(members):
            for j, target in enumerate(agent.handoffs):
                hloc: Loc = [*loc, "members", i, "handoffs", j]
                if spec.kind != "swarm":
                    errors.add(hloc, "Hand-offs are only used by `swarm` teams.", "invalid_handoff")
                elif target == agent.name:
                    errors.add(hloc, f"'{agent.name}' cannot hand off to itself.", "invalid_handoff")
                elif target == "user":
                    continue  # the person who gave the task: the run asks them for input
                elif target not in seen:
                    errors.add(
                        hloc,
                        f"Hand-off target '{target}' is not a member of the team (nor `user`).",
                        "unknown_handoff_target",
                    )
                elif lowered.get(target.lower()) != target:
                    errors.add(
                        hloc,
                        "Member names must differ by more than case to be hand-off targets.",
                        "invalid_handoff",
                    )

        if spec.kind == "graph":
            _check_graph(spec, [m.name for m in members], loc, errors)
        elif spec.edges is not None or spec.start is not None:
            errors.add([*loc, "edges"], "`edges` and `start` are for graph teams.", "invalid_team")
        subteams: dict[str, ResolvedTeamSpec] = {}
        if spec.kind == "chain":
            subteams = await self._check_chain(spec, seen, loc, errors)
        elif spec.steps is not None or spec.synthesizer is not None or spec.tolerate_failures:
            errors.add(
                [*loc, "steps"], "`steps`, `synthesizer` and `tolerate_failures` are for chain teams.", "invalid_team"
            )

        selector_model = spec.selector_model
        if spec.kind == "selector":
            try:
                selector_model = str(self.validator.models.parse(spec.selector_model))
            except ModelConfigError as exc:
                errors.add([*loc, "selector_model"], str(exc), "unknown_model")
            if spec.selector_prompt is not None:
                for field in ("{roles}", "{participants}", "{history}"):
                    if field not in spec.selector_prompt:
                        errors.add(
                            [*loc, "selector_prompt"],
                            f"The selector prompt must contain {field}.",
                            "invalid_spec",
                        )
        errors.raise_if_any()
        data = spec.model_dump()
        data["members"] = [m.model_dump() for m in members]
        data["selector_model"] = selector_model
        data["subteams"] = {ref: sub.model_dump() for ref, sub in subteams.items()}
        return ResolvedTeamSpec.model_validate(data)

    async def _check_chain(
        self, spec: TeamSpec, members: set[str], loc: Loc, errors: SpecErrors
    ) -> dict[str, ResolvedTeamSpec]:
        """Every step names members or stored teams (resolved now, frozen into the run); templates are sound."""
        subteams: dict[str, ResolvedTeamSpec] = {}
        if not spec.steps:
            errors.add([*loc, "steps"], "A chain needs at least one step.", "invalid_team")
            return subteams
        teams = TeamRepository(self.agents.session)
        for i, step in enumerate(spec.steps):
            sloc: Loc = [*loc, "steps", i]
            try:
                step.template.format(input="", task="")
            except (KeyError, IndexError, ValueError) as exc:
                errors.add(
                    [*sloc, "template"],
                    f"The template may only use {{input}} and {{task}} ({exc}).",
                    "invalid_template",
                )
            labels: set[str] = set()
            for j, branch in enumerate(step.branches):
                bloc: Loc = [*sloc, "parallel", j] if step.parallel is not None else sloc
                if branch.label in labels:
                    errors.add(bloc, f"'{branch.label}' appears twice in one parallel step.", "duplicate_branch")
                labels.add(branch.label)
                if branch.agent is not None:
                    if branch.agent not in members:
                        errors.add(
                            [*bloc, "agent"], f"'{branch.agent}' is not a member of the chain.", "unknown_member"
                        )
                    continue
                assert branch.team is not None
                if branch.team in subteams:
                    continue
                try:
                    row = await teams.get_by_id_or_name(self.principal_id, branch.team)
                except NotFound:
                    errors.add([*bloc, "team"], f"No stored team with id or name '{branch.team}'.", "unknown_team")
                    continue
                stored = TeamSpec.model_validate(row.spec)
                if stored.kind == "chain":
                    errors.add([*bloc, "team"], "A chain step cannot be another chain.", "invalid_team")
                    continue
                try:
                    subteams[branch.team] = await self.resolve(stored, [*bloc, "team"])
                except InvalidSpec as exc:
                    errors.errors.extend(exc.errors or [])
        if spec.synthesizer is not None and spec.synthesizer not in members:
            errors.add([*loc, "synthesizer"], f"'{spec.synthesizer}' is not a member of the chain.", "unknown_member")
        return subteams


def check_agent(validator: SpecValidator, spec: AgentSpec) -> None:
    errors = SpecErrors()
    validator.agent(spec, ["body"], errors)
    errors.raise_if_any()


def _check_graph(spec: TeamSpec, names: list[str], loc: Loc, errors: SpecErrors) -> None:
    """Unknown nodes, no way in, unreachable members, and AutoGen's own graph rules."""
    edges = spec.edges or []
    if not edges and len(names) > 1:
        errors.add([*loc, "edges"], "A graph team of several members needs edges.", "invalid_graph")
        return
    known = set(names)
    bad = False
    for i, edge in enumerate(edges):
        for end in ("source", "target"):
            node = getattr(edge, end)
            if node not in known:
                errors.add([*loc, "edges", i, end], f"Unknown node '{node}': not a member of the team.", "unknown_node")
                bad = True
    if spec.start is not None and spec.start not in known:
        errors.add([*loc, "start"], f"Unknown node '{spec.start}': not a member of the team.", "unknown_node")
        bad = True
    if bad:
        return
    entered = {e.target for e in edges}
    starts = [spec.start] if spec.start is not None else [n for n in names if n not in entered]
    if not starts:
        errors.add(
            [*loc, "edges"], "The graph has no start node: every member has an edge in. Set `start`.", "no_start_node"
        )
        return
    reached, frontier = set(starts), list(starts)
    while frontier:
        node = frontier.pop()
        for e in edges:
            if e.source == node and e.target not in reached:
                reached.add(e.target)
                frontier.append(e.target)
    for i, name in enumerate(names):
        if name not in reached:
            errors.add([*loc, "members", i], f"Node '{name}' cannot be reached from the start.", "unreachable_node")
    if len(reached) < len(names):
        return
    try:
        graph_of(spec, names).graph_validate()
    except ValueError as exc:
        errors.add([*loc, "edges"], f"Invalid graph: {exc}", "invalid_graph")
