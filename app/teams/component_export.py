"""A resolved team spec as AutoGen component JSON: what the team factory would build, dumped.

The JSON is written from the spec, not by dumping live AutoGen objects: the
factory's objects carry guarded model clients and ``FunctionTool``s, whose
dump embeds Python source. The result equals AutoGen 0.7.5's own
``dump_component()`` of the team the factory builds (tests compare the two),
with three deliberate differences, all listed in ``docs/interop.md``: no
``api_key`` at all, tools by name in the agent's ``metadata`` (the workbench
stays empty), and ``fake`` models as a ``ReplayChatCompletionClient`` that
names the fake model under a SwarmDirector key.
"""

from __future__ import annotations

from typing import Any

from app.agents.schemas import AgentSpec, ModelOptions
from app.core.errors import InvalidSpec
from app.core.settings import Settings
from app.engine.factory import default_agent_description, default_person_description
from app.engine.providers import known_or_generic_model_info
from app.teams.components import (
    APPROVE_TOOLS_METADATA_KEY,
    ASSISTANT,
    ASSISTANT_DEFAULT_SYSTEM_MESSAGE,
    AZURE_OPENAI,
    EXTENSION_KEY,
    HANDOFF,
    MAX_MESSAGES,
    OPENAI,
    OR,
    REPLAY,
    ROUND_ROBIN,
    SELECTOR,
    SELECTOR_DEFAULT_PROMPT,
    SELECTOR_MAX_ATTEMPTS,
    STATIC_STREAM_WORKBENCH,
    SWARM,
    TEAM_DEFAULT_DESCRIPTION,
    TEXT_MENTION,
    TIMEOUT,
    TOKEN_USAGE,
    TOOL_CALL_SUMMARY_FORMAT,
    TOOLS_METADATA_KEY,
    UNBOUNDED_CONTEXT,
    USER_PROXY,
)
from app.teams.schemas import ResolvedTeamSpec

Json = dict[str, Any]
EXPORTABLE_KINDS = ("round_robin", "selector", "swarm", "single")

# FakeChatCompletionClient's model info (it calls tools and hand-offs, so AutoGen must be told so),
# which is also what the registry gives openai_compatible models, with their configured tool calling.
_GENERIC_MODEL_INFO: Json = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": "unknown",
    "structured_output": False,
}


class ComponentExporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def team(self, spec: ResolvedTeamSpec) -> Json:
        if spec.kind not in EXPORTABLE_KINDS:
            raise InvalidSpec.at(
                ["team", "kind"],
                f"A `{spec.kind}` team has no AutoGen component here; exportable kinds: "
                + ", ".join(f"`{k}`" for k in EXPORTABLE_KINDS)
                + ".",
                code="component_unsupported",
            )
        swarm = spec.kind == "swarm"
        config: Json = {
            "name": spec.name,
            "description": spec.description or TEAM_DEFAULT_DESCRIPTION,
            "participants": [self.agent(m, swarm=swarm) for m in spec.members],
        }
        if spec.kind == "selector":
            config["model_client"] = self.model_client(spec.selector_model, None, streaming=False)
        config["termination_condition"] = self.termination(spec)
        if spec.kind == "selector":
            config.update(
                selector_prompt=spec.selector_prompt or SELECTOR_DEFAULT_PROMPT,
                allow_repeated_speaker=spec.allow_repeated_speaker,
                max_selector_attempts=SELECTOR_MAX_ATTEMPTS,
                emit_team_events=True,
                model_client_streaming=False,
            )
            return SELECTOR.component(config)
        config["emit_team_events"] = False
        return (SWARM if swarm else ROUND_ROBIN).component(config)

    def agent(self, spec: AgentSpec, *, swarm: bool) -> Json:
        if spec.kind == "user_proxy":
            return USER_PROXY.component(
                {"name": spec.name, "description": spec.description or default_person_description(spec.name)}
            )
        config: Json = {
            "name": spec.name,
            "model_client": self.model_client(spec.model, spec.model_options, streaming=spec.streaming),
            # registry tools travel by name (metadata below), never as FunctionTool source code
            "workbench": [STATIC_STREAM_WORKBENCH.component({"tools": [], "tool_overrides": {}})],
        }
        if swarm and spec.handoffs:
            config["handoffs"] = [_handoff(target) for target in spec.handoffs]
        config.update(
            model_context=UNBOUNDED_CONTEXT.component({}),
            description=spec.description or default_agent_description(spec.name),
            system_message=ASSISTANT_DEFAULT_SYSTEM_MESSAGE if spec.system_message is None else spec.system_message,
            model_client_stream=spec.streaming,
            reflect_on_tool_use=spec.reflect_on_tool_use,
            tool_call_summary_format=TOOL_CALL_SUMMARY_FORMAT,
            max_tool_iterations=spec.max_tool_iterations,
            metadata=_tools_metadata(spec),
        )
        return ASSISTANT.component(config)

    def model_client(self, model: str | None, options: ModelOptions | None, *, streaming: bool) -> Json:
        """The client ``ModelRegistry.build`` would make, minus its key; ``model`` is resolved."""
        provider, _, name = (model or "").partition("/")
        if provider == "fake":
            extension: Json = {"model": model}
            if options is not None:
                extension["model_options"] = options.model_dump(mode="json", exclude_none=True)
            script = options.script if options and options.script else []
            return REPLAY.component(
                {
                    "chat_completions": [step.text for step in script if step.text is not None],
                    "model_info": dict(_GENERIC_MODEL_INFO),
                    EXTENSION_KEY: extension,
                }
            )
        config: Json = {}
        if options is not None:
            if options.max_tokens is not None:
                config["max_tokens"] = options.max_tokens
            if options.temperature is not None:
                config["temperature"] = options.temperature
        if streaming:
            config["stream_options"] = {"include_usage": True}
        config["model"] = name
        s = self.settings
        if provider == "azure_openai":
            config.update(
                model_info=dict(known_or_generic_model_info(name)),
                azure_endpoint=s.azure_openai_endpoint or "",
                azure_deployment=name,
                api_version=s.azure_openai_api_version,
            )
            return AZURE_OPENAI.component(config)
        if provider == "openai_compatible":
            config["model_info"] = {
                **_GENERIC_MODEL_INFO,
                "function_calling": s.openai_compatible_function_calling,
            }
            config["base_url"] = s.openai_compatible_base_url or ""
        else:
            config["model_info"] = dict(known_or_generic_model_info(name))
        return OPENAI.component(config)

    def termination(self, spec: ResolvedTeamSpec) -> Json:
        """The conditions ``TeamFactory.termination`` builds for a run with no history, in its order."""
        t = spec.termination
        conditions: list[Json] = []
        if spec.kind == "single":
            conditions.append(_max_messages(2))
        if t.max_messages is not None:
            conditions.append(_max_messages(t.max_messages))
        if t.text_mention is not None:
            conditions.append(TEXT_MENTION.component({"text": t.text_mention}))
        if t.timeout_s is not None:
            conditions.append(TIMEOUT.component({"timeout_seconds": float(t.timeout_s)}))
        if t.token_budget is not None:
            conditions.append(TOKEN_USAGE.component({"max_total_token": t.token_budget}))
        if spec.kind == "swarm" and any("user" in m.handoffs for m in spec.members):
            conditions.append(HANDOFF.component({"target": "user"}))
        if not conditions:
            conditions.append(_max_messages(self.settings.default_max_messages))
        combined = conditions[0]
        for condition in conditions[1:]:
            # `a | b | c` in the factory nests to the left, and so does its dump
            combined = OR.component({"conditions": [combined, condition]})
        return combined


def _max_messages(count: int) -> Json:
    return MAX_MESSAGES.component({"max_messages": count, "include_agent_event": False})


def _handoff(target: str) -> Json:
    """AutoGen's ``Handoff(target=...)`` with its defaults, as it dumps."""
    return {
        "target": target,
        "description": f"Handoff to {target}.",
        "name": f"transfer_to_{target}".lower(),
        "message": f"Transferred to {target}, adopting the role of {target} immediately.",
    }


def _tools_metadata(spec: AgentSpec) -> dict[str, str]:
    metadata = {TOOLS_METADATA_KEY: ",".join(spec.tools)} if spec.tools else {}
    if spec.approve_tools:
        metadata[APPROVE_TOOLS_METADATA_KEY] = ",".join(spec.approve_tools)
    return metadata
