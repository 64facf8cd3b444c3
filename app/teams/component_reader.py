"""Reading component JSON field by field: envelopes, termination conditions, error places.

The import's toolkit. A ``ComponentReader`` collects every problem it finds
(with the ``loc`` of the JSON at fault) instead of stopping at the first, and
remembers where each spec field came from so that later validation errors
can be moved onto the component (``locate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from app.teams import components as c
from app.teams.service import Loc, SpecErrors

Json = dict[str, Any]
Path = tuple[str | int, ...]
Condition = tuple[c.Provider, Json, Loc]
COMPONENT_LOC: Loc = ["body", "component"]


def locate(origins: dict[Path, Loc], loc: Loc) -> Loc:
    """Where in the component a spec field's ``loc`` came from: its longest known prefix, then the rest."""
    for end in range(len(loc), -1, -1):
        origin = origins.get(tuple(loc[:end]))
        if origin is not None:
            return [*origin, *loc[end:]]
    return list(COMPONENT_LOC)


@dataclass
class ComponentReader:
    errors: SpecErrors = field(default_factory=SpecErrors)
    # spec field path -> where in the component it was read
    origins: dict[Path, Loc] = field(default_factory=dict)

    def invalid(self, loc: Loc, msg: str) -> None:
        self.errors.add(loc, msg, "component_invalid")

    def unsupported(self, loc: Loc, msg: str) -> None:
        self.errors.add(loc, msg, "component_unsupported")

    def validated(self, model: type[BaseModel], data: Json, prefix: Path) -> Any:
        """``model`` from ``data``, or None with its errors moved onto the component."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_input=False):
                self.errors.add(locate(self.origins, [*prefix, *e["loc"]]), e["msg"], e["type"])
            return None

    def component(
        self, node: Any, loc: Loc, expected: tuple[c.Provider, ...], what: str
    ) -> tuple[c.Provider, Json] | None:
        """The provider and config of a component expected to be ``what``; None (and an error) otherwise."""
        if not isinstance(node, dict):
            self.invalid(loc, f"Expected {what} component (an object with `provider` and `config`).")
            return None
        provider = node.get("provider")
        if not isinstance(provider, str):
            self.invalid([*loc, "provider"], f"Expected {what} component: `provider` is missing or not a string.")
            return None
        known = c.allowed_provider(provider)
        if known is None or known not in expected:
            if known in c.TEAMS:
                self.unsupported([*loc, "provider"], "Teams nested in teams are not supported.")
            else:
                labels = ", ".join(p.label for p in expected)
                self.unsupported([*loc, "provider"], f"Expected {what} ({labels}) here, not '{provider}'.")
            return None
        config = node.get("config")
        if not isinstance(config, dict):
            self.invalid([*loc, "config"], f"The {known.label} component has no `config` object.")
            return None
        ctype = node.get("component_type")
        if ctype is not None and ctype != known.component_type:
            self.invalid([*loc, "component_type"], f"A {known.label} is a '{known.component_type}', not '{ctype}'.")
            return None
        version = node.get("component_version", node.get("version"))
        if version is not None and (not isinstance(version, int) or version > known.version):
            self.unsupported(
                [*loc, "component_version"], f"{known.label} version {version} is newer than this server reads."
            )
            return None
        return known, config

    def conditions(self, node: Any, loc: Loc) -> list[Condition]:
        """The conditions of an ``Or`` tree, flattened in order (``a | b | c`` nests to the left)."""
        got = self.component(node, loc, c.TERMINATIONS, "a termination condition")
        if got is None:
            return []
        provider, config = got
        if provider is not c.OR:
            return [(provider, config, loc)]
        parts = config.get("conditions")
        if not isinstance(parts, list) or not parts:
            self.invalid([*loc, "config", "conditions"], "An OrTerminationCondition needs a list of conditions.")
            return []
        return [
            found for i, part in enumerate(parts) for found in self.conditions(part, [*loc, "config", "conditions", i])
        ]

    def termination(self, conditions: list[Condition]) -> Json:
        """Termination fields from or-ed conditions; where a kind repeats, the strictest wins."""
        found: dict[str, tuple[Any, Loc]] = {}

        def keep(key: str, value: Any, loc: Loc) -> None:
            if key not in found or (_is_number(value) and _is_number(found[key][0]) and value < found[key][0]):
                found[key] = (value, loc)

        for provider, config, loc in conditions:
            cfg: Loc = [*loc, "config"]
            if provider is c.MAX_MESSAGES:
                if config.get("include_agent_event"):
                    self.unsupported([*cfg, "include_agent_event"], "Counting agent events is not supported.")
                keep("max_messages", config.get("max_messages"), [*cfg, "max_messages"])
            elif provider is c.TEXT_MENTION:
                if config.get("sources"):
                    self.unsupported([*cfg, "sources"], "A text mention limited to some sources is not supported.")
                text = config.get("text")
                if "text_mention" in found and found["text_mention"][0] != text:
                    self.unsupported([*cfg, "text"], "Only one text mention can end a team.")
                keep("text_mention", text, [*cfg, "text"])
            elif provider is c.TIMEOUT:
                keep("timeout_s", config.get("timeout_seconds"), [*cfg, "timeout_seconds"])
            elif provider is c.TOKEN_USAGE:
                for key in ("max_prompt_token", "max_completion_token"):
                    if config.get(key) is not None:
                        self.unsupported([*cfg, key], "Only a total token budget (`max_total_token`) is supported.")
                keep("token_budget", config.get("max_total_token"), [*cfg, "max_total_token"])
            elif provider is c.HANDOFF and config.get("target") != "user":
                self.unsupported([*cfg, "target"], "Only a hand-off to `user` can end a team.")
            # HandoffTermination(target="user") is implied by a swarm member's hand-off to `user`
        for key, (_, loc) in found.items():
            self.origins[("termination", key)] = loc
        return {key: value for key, (value, _) in found.items()}


def pop_single_limit(conditions: list[Condition]) -> bool:
    """A one-member round robin stopped after two messages is a `single` team: take that limit out."""
    for i, (provider, config, _) in enumerate(conditions):
        if provider is c.MAX_MESSAGES and config.get("max_messages") == 2 and not config.get("include_agent_event"):
            del conditions[i]
            return True
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
