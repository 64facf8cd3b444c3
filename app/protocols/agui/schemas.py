"""What an AG-UI request carries for us, read out of the protocol's own models.

The request body is the official package's ``RunAgentInput``; what it asks of a run is checked
here, with an error that names the field, before anything is started. The capabilities answer is
the package's ``AgentCapabilities``: the spec defines its shape, not a route.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from ag_ui.core import (
    AgentCapabilities,
    HumanInTheLoopCapabilities,
    IdentityCapabilities,
    MultiAgentCapabilities,
    ReasoningCapabilities,
    RunAgentInput,
    StateCapabilities,
    SubagentInfo,
    ToolsCapabilities,
    TransportCapabilities,
)
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from app.core.errors import InvalidSpec

# a thread is a conversation, whose ids are at most 40 characters; kept to characters a URL path takes as is
THREAD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
# the run is found again by its AG-UI runId through the principal's Idempotency-Key
IDEMPOTENCY_PREFIX = "agui:"
RUN_ID_MAX = 255 - len(IDEMPOTENCY_PREFIX)
PRINTABLE = re.compile(r"[\x21-\x7e]+")


class AguiRunAgentInput(BaseModel):
    """AG-UI's ``RunAgentInput`` as this API documents it; the request is read by the protocol's own
    model (``official``). Its free-form parts (messages, tools, state) are the protocol's, not ours."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    thread_id: str = Field(description="The thread: our conversation, made on its first run.")
    run_id: str = Field(description="The run's id, yours: sent again, it streams the same run.")
    messages: list[dict[str, Any]] = Field(description="AG-UI messages; the last is the new user turn.")
    protocol_version: str | None = None
    parent_run_id: str | None = None
    state: Any = Field(default=None, description="Ignored: shared state is not supported.")
    tools: list[dict[str, Any]] | None = Field(default=None, description="Client-provided tools: refused unless empty.")
    context: list[dict[str, Any]] | None = Field(default=None, description="Ignored.")
    forwarded_props: Any = Field(default=None, description="Ignored.")
    resume: list[dict[str, Any]] | None = Field(
        default=None, description="Answers to the interrupts of the thread's paused run."
    )

    def official(self) -> RunAgentInput:
        """The request read by AG-UI's own ``RunAgentInput``; what it refuses is a 422 naming the field."""
        try:
            return RunAgentInput.model_validate(self.model_dump(by_alias=True, exclude_unset=True))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _text(content: Any) -> str:
    """A user message's text: its string, or its text parts joined (other parts are refused)."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if getattr(part, "type", None) != "text":
            raise InvalidSpec.at(
                ["body", "messages"], "Only text parts are supported in a user message.", code="unsupported_content"
            )
        texts.append(part.text)
    return "\n".join(texts)


def check_ids(body: RunAgentInput) -> None:
    """The request's thread and run ids, and what it asks that is not supported, checked."""
    if body.tools:  # an empty list (what CopilotKit sends) asks for nothing
        raise InvalidSpec.at(
            ["body", "tools"],
            "Client-provided (frontend) tools are not supported: a team calls only the tools registered on the "
            "server (capabilities: tools.clientProvided is false). Send `tools: []` or leave it out.",
            code="client_tools_unsupported",
        )
    if not THREAD_ID.fullmatch(body.thread_id):
        raise InvalidSpec.at(
            ["body", "threadId"],
            "threadId must be 1 to 40 characters: letters, digits, '_', '-', '.' or ':'.",
            code="invalid_thread_id",
        )
    if len(body.run_id) > RUN_ID_MAX or not PRINTABLE.fullmatch(body.run_id):
        raise InvalidSpec.at(
            ["body", "runId"],
            f"runId must be 1 to {RUN_ID_MAX} printable ASCII characters without spaces.",
            code="invalid_run_id",
        )


def task_of(body: RunAgentInput, max_chars: int) -> str:
    """The new user turn: the text of the last message, which must be the user's, at most ``max_chars``
    long (``SWARM_MAX_TASK_CHARS``, the run's task limit, checked here to name AG-UI's field)."""
    last = body.messages[-1] if body.messages else None
    if last is None or last.role != "user":
        raise InvalidSpec.at(["body", "messages"], "The last message must be the user's new turn.", code="no_user_turn")
    text = _text(last.content)
    if not text.strip():
        raise InvalidSpec.at(["body", "messages"], "The user's message is blank.", code="blank_user_turn")
    if len(text) > max_chars:
        raise InvalidSpec.at(
            ["body", "messages"], f"The user's message is longer than {max_chars} characters.", code="task_too_long"
        )
    return text


def capabilities(team_name: str, description: str, members: list[str]) -> AgentCapabilities:
    """What a team served over AG-UI does, as ``AgentCapabilities`` (only what it supports is declared).

    ``transport.resumable`` is AG-UI's "resuming interrupted streams via sequence numbers": AG-UI's
    frames carry none, so it is false; how a client gets a cut stream back (by ``runId``, with a
    snapshot) is said under ``custom.swarmdirector``, the spec's place for what its categories lack."""
    runs = f"/agui/teams/{quote(team_name, safe='')}/runs/{{runId}}"
    return AgentCapabilities(
        identity=IdentityCapabilities(name=team_name, type="swarmdirector-team", description=description or None),
        transport=TransportCapabilities(streaming=True, websocket=False, resumable=False),
        tools=ToolsCapabilities(supported=True, client_provided=False),
        state=StateCapabilities(snapshots=False, deltas=False),
        multi_agent=MultiAgentCapabilities(
            supported=True, handoffs=True, subagents=[SubagentInfo(name=name) for name in members]
        ),
        # sent when a member's model streams its reasoning (REASONING_* events); never encrypted
        reasoning=ReasoningCapabilities(supported=True, streaming=True, encrypted=False),
        human_in_the_loop=HumanInTheLoopCapabilities(supported=True, interrupts=True),
        custom={
            "swarmdirector": {
                "reconnect": {
                    "method": "GET",
                    "path": runs,
                    "description": (
                        "The run started with this runId, live or over: RUN_STARTED, a MESSAGES_SNAPSHOT of the "
                        "thread's completed messages, then the run from its log after them. A POST of the same "
                        "RunAgentInput again streams the run from its start."
                    ),
                },
                "cancel": {"method": "POST", "path": runs + "/cancel"},
            }
        },
    )
