"""AutoGen's declarative component JSON, as far as SwarmDirector reads and writes it.

AutoGen Studio galleries hold teams as ``ComponentModel`` JSON: a ``provider``
(the dotted path of a Python class), an envelope (``component_type``,
``version``, ``component_version``, ``description``, ``label``) and a
``config`` in which nested components have the same shape. AutoGen's own
``load_component`` imports whatever class ``provider`` names and runs it,
and a ``FunctionTool``'s config carries source code that it executes, so
request data never goes near it. This module is the catalogue both
directions share instead: the classes SwarmDirector writes and accepts (the
allowlist), their envelopes exactly as AutoGen 0.7.5 dumps them, and the
SwarmDirector-specific keys AutoGen ignores. ``component_export`` builds
the JSON from a spec; ``component_guard`` refuses what must never load;
``component_import`` maps the rest back to a spec. ``docs/interop.md`` is
the user-facing account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Agent ``metadata`` (a ``dict[str, str]`` AutoGen keeps through load and dump) names the agent's
# registry tools, comma-separated: tools travel by name, never as FunctionTool source code.
TOOLS_METADATA_KEY = "swarmdirector.tools"
# ... and those of them whose calls wait for a person's approval (``approve_tools``), the same way.
APPROVE_TOOLS_METADATA_KEY = "swarmdirector.approve_tools"
# A key in a model client's ``config`` that AutoGen's config models ignore: the ``fake`` model
# reference (and its options) behind an exported ReplayChatCompletionClient.
EXTENSION_KEY = "swarmdirector"

# AutoGen defaults that SwarmDirector leaves unset: mapped back to "unset" on import.
ASSISTANT_DEFAULT_SYSTEM_MESSAGE = (
    "You are a helpful AI assistant. Solve tasks using your tools. Reply with TERMINATE when the task has been "
    "completed."
)
SELECTOR_DEFAULT_PROMPT = (
    "You are in a role play game. The following roles are available:\n{roles}.\nRead the following conversation. "
    "Then select the next role from {participants} to play. Only return the role.\n\n{history}\n\nRead the above "
    "conversation. Then select the next role from {participants} to play. Only return the role.\n"
)
TEAM_DEFAULT_DESCRIPTION = "A team of agents."
SELECTOR_MAX_ATTEMPTS = 3
TOOL_CALL_SUMMARY_FORMAT = "{result}"


@dataclass(frozen=True)
class Provider:
    """One AutoGen component class SwarmDirector writes and accepts, with its dumped envelope."""

    path: str
    component_type: str
    version: int
    description: str | None

    @property
    def label(self) -> str:
        return self.path.rsplit(".", 1)[1]

    def component(self, config: dict[str, Any]) -> dict[str, Any]:
        """The component as AutoGen dumps it nested in another's config (``None`` fields left out)."""
        envelope: dict[str, Any] = {
            "provider": self.path,
            "component_type": self.component_type,
            "version": self.version,
            "component_version": self.version,
        }
        if self.description is not None:
            envelope["description"] = self.description
        return {**envelope, "label": self.label, "config": config}


def _p(path: str, component_type: str, description: str | None, version: int = 1) -> Provider:
    return Provider(path, component_type, version, description)


ROUND_ROBIN = _p(
    "autogen_agentchat.teams.RoundRobinGroupChat",
    "team",
    "A team that runs a group chat with participants taking turns in a round-robin fashion\n"
    "    to publish a message to all.",
)
SELECTOR = _p(
    "autogen_agentchat.teams.SelectorGroupChat",
    "team",
    "A group chat team that have participants takes turn to publish a message\n"
    "    to all, using a ChatCompletion model to select the next speaker after each message.",
)
SWARM = _p(
    "autogen_agentchat.teams.Swarm",
    "team",
    "A group chat team that selects the next speaker based on handoff message only.",
)
ASSISTANT = _p(
    "autogen_agentchat.agents.AssistantAgent",
    "agent",
    "An agent that provides assistance with tool use.\n"
    "    The :meth:`on_messages` returns a :class:`~autogen_agentchat.base.Response`\n"
    "    in which :attr:`~autogen_agentchat.base.Response.chat_message` is the final\n"
    "    response message.",
    version=2,
)
USER_PROXY = _p(
    "autogen_agentchat.agents.UserProxyAgent",
    "agent",
    "An agent that can represent a human user through an input function.",
)
OPENAI = _p(
    "autogen_ext.models.openai.OpenAIChatCompletionClient",
    "model",
    "Chat completion client for OpenAI hosted models.",
)
AZURE_OPENAI = _p(
    "autogen_ext.models.openai.AzureOpenAIChatCompletionClient",
    "model",
    "Chat completion client for Azure OpenAI hosted models.",
)
REPLAY = _p(
    "autogen_ext.models.replay.ReplayChatCompletionClient",
    "replay_chat_completion_client",
    "A mock chat completion client that replays predefined responses using an index-based approach.",
)
MAX_MESSAGES = _p(
    "autogen_agentchat.conditions.MaxMessageTermination",
    "termination",
    "Terminate the conversation after a maximum number of messages have been exchanged.",
)
TEXT_MENTION = _p(
    "autogen_agentchat.conditions.TextMentionTermination",
    "termination",
    "Terminate the conversation if a specific text is mentioned.",
)
TIMEOUT = _p(
    "autogen_agentchat.conditions.TimeoutTermination",
    "termination",
    "Terminate the conversation after a specified duration has passed.",
)
TOKEN_USAGE = _p(
    "autogen_agentchat.conditions.TokenUsageTermination",
    "termination",
    "Terminate the conversation if a token usage limit is reached.",
)
HANDOFF = _p(
    "autogen_agentchat.conditions.HandoffTermination",
    "termination",
    "Terminate the conversation if a :class:`~autogen_agentchat.messages.HandoffMessage`\n"
    "    with the given target is received.",
)
OR = _p("autogen_agentchat.base.OrTerminationCondition", "termination", None)
STATIC_STREAM_WORKBENCH = _p(
    "autogen_core.tools.StaticStreamWorkbench",
    "workbench",
    "A workbench that provides a static set of tools that do not change after\n"
    "    each tool execution, and supports streaming results.",
)
STATIC_WORKBENCH = _p(
    "autogen_core.tools.StaticWorkbench",
    "workbench",
    "A workbench that provides a static set of tools that do not change after\n    each tool execution.",
)
UNBOUNDED_CONTEXT = _p(
    "autogen_core.model_context.UnboundedChatCompletionContext",
    "chat_completion_context",
    "An unbounded chat completion context that keeps a view of the all the messages.",
)

TEAMS = (ROUND_ROBIN, SELECTOR, SWARM)
AGENTS = (ASSISTANT, USER_PROXY)
MODELS = (OPENAI, AZURE_OPENAI, REPLAY)
TERMINATIONS = (MAX_MESSAGES, TEXT_MENTION, TIMEOUT, TOKEN_USAGE, HANDOFF, OR)
WORKBENCHES = (STATIC_STREAM_WORKBENCH, STATIC_WORKBENCH)

# Every provider an imported component may name. Anything else is refused unread.
ALLOWED: dict[str, Provider] = {
    p.path: p for p in (*TEAMS, *AGENTS, *MODELS, *TERMINATIONS, *WORKBENCHES, UNBOUNDED_CONTEXT)
}
# The short names AutoGen's loader itself accepts for model clients (``WELL_KNOWN_PROVIDERS``).
ALIASES: dict[str, Provider] = {
    "openai_chat_completion_client": OPENAI,
    "OpenAIChatCompletionClient": OPENAI,
    "azure_openai_chat_completion_client": AZURE_OPENAI,
    "AzureOpenAIChatCompletionClient": AZURE_OPENAI,
}


def allowed_provider(provider: str) -> Provider | None:
    return ALLOWED.get(provider) or ALIASES.get(provider)
