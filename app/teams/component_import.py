"""AutoGen component JSON → a team spec, by reading the JSON, never by loading it.

``component_guard`` has refused code and foreign classes first; this walks
what is left, field by field, into a ``TeamSpec``. What the spec cannot
express and would change how the team behaves (``max_turns``, an ``And``
condition, a nested team, tools in a workbench) is refused; presentation
details (labels, hand-off messages, ``emit_team_events``) and credentials
(``api_key``) are ignored. Every spec field remembers the place in the JSON
it came from, so the normal validation's errors point into the component.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.agents.schemas import AgentSpec
from app.core.errors import InvalidSpec
from app.core.settings import Settings
from app.engine.factory import default_agent_description, default_person_description
from app.teams import components as c
from app.teams.component_guard import guard_component
from app.teams.component_reader import COMPONENT_LOC, ComponentReader, Condition, Json, Path, locate, pop_single_limit
from app.teams.schemas import TeamSpec, Termination
from app.teams.service import Loc, TeamResolver


@dataclass
class ImportedTeam:
    """A spec read from a component, and where in the component each of its fields came from."""

    spec: TeamSpec
    origins: dict[Path, Loc]

    async def validate(self, resolver: TeamResolver) -> None:
        """The normal team validation, its errors pointing into the component."""
        try:
            await resolver.resolve(self.spec, [])
        except InvalidSpec as exc:
            for error in exc.errors or []:
                error.loc = locate(self.origins, error.loc)
            raise


class ComponentImporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def team(self, component: Json, name: str | None) -> ImportedTeam:
        guard_component(component, COMPONENT_LOC)
        walk = ComponentReader()
        spec = self._team(walk, component, name)
        if walk.errors.errors or spec is None:
            first = walk.errors.errors[0]
            # pydantic's error types (`string_too_long`, ...) stay on the fields; the problem is the component's
            code = first.type if first.type.startswith("component_") else "component_invalid"
            raise InvalidSpec(first.msg, code=code, errors=walk.errors.errors)
        return ImportedTeam(spec, walk.origins)

    def _team(self, walk: ComponentReader, component: Json, name: str | None) -> TeamSpec | None:
        got = walk.component(component, COMPONENT_LOC, c.TEAMS, "a team")
        if got is None:
            return None
        provider, config = got
        cloc: Loc = [*COMPONENT_LOC, "config"]
        walk.origins.update(
            {
                (): list(COMPONENT_LOC),
                ("kind",): [*COMPONENT_LOC, "provider"],
                ("name",): ["body", "name"] if name is not None else [*cloc, "name"],
                ("description",): [*cloc, "description"],
                ("members",): [*cloc, "participants"],
                ("termination",): [*cloc, "termination_condition"],
                ("selector_model",): [*cloc, "model_client"],
                ("selector_prompt",): [*cloc, "selector_prompt"],
                ("allow_repeated_speaker",): [*cloc, "allow_repeated_speaker"],
            }
        )
        if config.get("max_turns") is not None:
            walk.unsupported([*cloc, "max_turns"], "`max_turns` is not supported; use a MaxMessageTermination.")
        participants = config.get("participants")
        if not isinstance(participants, list) or not participants:
            walk.invalid([*cloc, "participants"], "A team needs a non-empty list of participant components.")
            participants = []
        members = [self._agent(walk, p, [*cloc, "participants", i], i) for i, p in enumerate(participants)]

        kind = {c.ROUND_ROBIN: "round_robin", c.SELECTOR: "selector", c.SWARM: "swarm"}[provider]
        conditions: list[Condition] = []
        if config.get("termination_condition") is not None:
            conditions = walk.conditions(config["termination_condition"], [*cloc, "termination_condition"])
        single = kind == "round_robin" and len(participants) == 1 and pop_single_limit(conditions)
        data: Json = {
            "name": name if name is not None else config.get("name"),
            "kind": "single" if single else kind,
            "description": _unless(config.get("description"), c.TEAM_DEFAULT_DESCRIPTION),
            "termination": walk.termination(conditions),
        }
        if data["name"] is None:
            walk.invalid([*cloc, "name"], "The team component has no `name`: give one in the request's `name`.")
        if kind == "selector":
            data["selector_model"], _ = self._model(
                walk, config.get("model_client"), [*cloc, "model_client"], ("selector_model",)
            )
            prompt = config.get("selector_prompt")
            data["selector_prompt"] = None if prompt == c.SELECTOR_DEFAULT_PROMPT else prompt
            data["allow_repeated_speaker"] = config.get("allow_repeated_speaker", False)
        if walk.errors.errors:
            return None
        data["termination"] = walk.validated(Termination, data["termination"], ("termination",))
        data["members"] = [walk.validated(AgentSpec, m, ("members", i)) for i, m in enumerate(members)]
        if walk.errors.errors:
            return None
        spec: TeamSpec | None = walk.validated(TeamSpec, data, ())
        return spec

    def _agent(self, walk: ComponentReader, node: Any, loc: Loc, index: int) -> Json:
        prefix: Path = ("members", index)
        walk.origins[prefix] = loc
        got = walk.component(node, loc, c.AGENTS, "an agent")
        if got is None:
            return {}
        provider, config = got
        aloc: Loc = [*loc, "config"]
        for key, where in (
            ("name", "name"),
            ("description", "description"),
            ("system_message", "system_message"),
            ("handoffs", "handoffs"),
            ("streaming", "model_client_stream"),
            ("reflect_on_tool_use", "reflect_on_tool_use"),
            ("max_tool_iterations", "max_tool_iterations"),
            ("model", "model_client"),
        ):
            walk.origins[(*prefix, key)] = [*aloc, where]
        walk.origins[(*prefix, "tools")] = [*aloc, "metadata", c.TOOLS_METADATA_KEY]
        walk.origins[(*prefix, "approve_tools")] = [*aloc, "metadata", c.APPROVE_TOOLS_METADATA_KEY]
        name = config.get("name")
        if not isinstance(name, str):
            walk.invalid([*aloc, "name"], "An agent needs a `name` (a string).")
            name = ""
        description = config.get("description")
        if provider is c.USER_PROXY:
            description = _unless(description, default_person_description(name))
            return {"name": name, "kind": "user_proxy", "description": description}

        model, options = self._model(walk, config.get("model_client"), [*aloc, "model_client"], prefix)
        system_message = config.get("system_message")
        member: Json = {
            "name": name,
            "kind": "assistant",
            "description": _unless(description, default_agent_description(name)),
            # AutoGen's None is "no system message"; ours is "AutoGen's default one"
            "system_message": None if system_message == c.ASSISTANT_DEFAULT_SYSTEM_MESSAGE else system_message or "",
            "model": model,
            "model_options": options,
            "tools": _tools(walk, config, aloc),
            "approve_tools": _named(walk, config.get("metadata"), c.APPROVE_TOOLS_METADATA_KEY, aloc),
            "handoffs": _handoffs(walk, config.get("handoffs"), [*aloc, "handoffs"]),
            "streaming": config.get("model_client_stream", False),
            "reflect_on_tool_use": config.get("reflect_on_tool_use", False),
            "max_tool_iterations": config.get("max_tool_iterations", 1),
        }
        context = config.get("model_context")
        if context is not None:
            walk.component(context, [*aloc, "model_context"], (c.UNBOUNDED_CONTEXT,), "a model context")
        for key in ("memory", "structured_message_factory"):
            if config.get(key):
                walk.unsupported([*aloc, key], f"Agents with `{key}` are not supported.")
        return member

    def _model(self, walk: ComponentReader, node: Any, loc: Loc, prefix: Path) -> tuple[str | None, Json | None]:
        """``provider/model`` and model options of a model client component (its key is never read)."""
        got = walk.component(node, loc, c.MODELS, "a model client")
        if got is None:
            return None, None
        provider, config = got
        mloc: Loc = [*loc, "config"]
        if provider is c.REPLAY:
            return _replay(walk, config, mloc, prefix)
        key = "azure_deployment" if provider is c.AZURE_OPENAI and config.get("azure_deployment") else "model"
        name = config.get(key)
        if not isinstance(name, str) or not name:
            walk.invalid([*mloc, key], "A model client needs the model's name.")
            return None, None
        walk.origins[(*prefix, "model_options")] = mloc
        options = {k: config[k] for k in ("temperature", "max_tokens") if config.get(k) is not None}
        if provider is c.AZURE_OPENAI:
            return f"azure_openai/{name}", options or None
        compatible = self.settings.openai_compatible_base_url
        base_url = config.get("base_url")
        if isinstance(base_url, str) and compatible and _same_url(base_url, compatible):
            return f"openai_compatible/{name}", options or None
        return f"openai/{name}", options or None


def _replay(walk: ComponentReader, config: Json, loc: Loc, prefix: Path) -> tuple[str | None, Json | None]:
    """A replay client is the ``fake`` model: the one SwarmDirector exported, or scripted replies."""
    extension = config.get(c.EXTENSION_KEY)
    if extension is not None:
        model = extension.get("model") if isinstance(extension, dict) else None
        if not isinstance(model, str) or not model.startswith("fake/"):
            walk.invalid([*loc, c.EXTENSION_KEY, "model"], "Expected a `fake/...` model reference.")
            return None, None
        walk.origins[(*prefix, "model_options")] = [*loc, c.EXTENSION_KEY, "model_options"]
        options = extension.get("model_options")
        return model, options if options is not None else None
    replies = config.get("chat_completions", [])
    if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
        walk.unsupported([*loc, "chat_completions"], "Only text replies (strings) can be replayed.")
        return None, None
    walk.origins[(*prefix, "model_options", "script")] = [*loc, "chat_completions"]
    return "fake/default", {"script": [{"text": r} for r in replies]} if replies else None


def _tools(walk: ComponentReader, config: Json, loc: Loc) -> list[str]:
    """Registry tool names from the agent's metadata; tool components themselves are refused."""
    if config.get("tools"):
        walk.unsupported([*loc, "tools"], f"Tools are named in `metadata['{c.TOOLS_METADATA_KEY}']`.")
    benches = config.get("workbench")
    for i, bench in enumerate(benches if isinstance(benches, list) else [benches] if benches else []):
        where: Loc = [*loc, "workbench", i] if isinstance(benches, list) else [*loc, "workbench"]
        got = walk.component(bench, where, c.WORKBENCHES, "a workbench")
        if got is not None and got[1].get("tools"):
            walk.unsupported([*where, "config", "tools"], f"Tools are named in `metadata['{c.TOOLS_METADATA_KEY}']`.")
    return _named(walk, config.get("metadata"), c.TOOLS_METADATA_KEY, loc)


def _named(walk: ComponentReader, metadata: Any, key: str, loc: Loc) -> list[str]:
    """The tool names an agent's ``metadata[key]`` lists, comma-separated."""
    names = metadata.get(key) if isinstance(metadata, dict) else None
    if names is None:
        return []
    if not isinstance(names, str):
        walk.invalid([*loc, "metadata", key], "Expected tool names separated by commas.")
        return []
    return [n.strip() for n in names.split(",") if n.strip()]


def _handoffs(walk: ComponentReader, handoffs: Any, loc: Loc) -> list[str]:
    if handoffs is None:
        return []
    if not isinstance(handoffs, list):
        walk.invalid(loc, "Expected a list of hand-offs.")
        return []
    targets: list[str] = []
    for j, item in enumerate(handoffs):
        target = item.get("target") if isinstance(item, dict) else item
        if not isinstance(target, str):
            walk.invalid([*loc, j], "A hand-off is an agent name or an object with a `target`.")
            continue
        targets.append(target)
    return targets


def _unless(description: Any, default: str) -> Any:
    """A description, or "" where it is absent or the default the server would give it anyway."""
    return "" if description is None or description == default else description


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()
