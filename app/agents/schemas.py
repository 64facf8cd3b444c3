"""The agent spec: what a client may say about an agent. Data only, never code."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from app.core.schemas import Name, StrictModel
from app.engine.specs import check_one_action


class ScriptToolCall(StrictModel):
    """A function call the fake model makes in a scripted step."""

    name: str = Field(min_length=1, description="Name of the tool (function) to call.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Arguments of the call, as a JSON object.")


class ScriptStep(StrictModel):
    """One scripted model call; a fake client consumes its steps in order, one per call."""

    # the public face of the fake model's script (app/engine/fake.py reads it into its own type);
    # forbidding extra fields reports a misspelt one instead of ignoring it
    text: str | None = Field(default=None, description="Reply with exactly this text, streamed word by word.")
    reasoning: str | None = Field(
        default=None,
        description="Reason first, as a reasoning model does: this text streams (word by word) before the reply, "
        "apart from it (`reasoning.delta` events).",
    )
    tool_calls: list[ScriptToolCall] | None = Field(
        default=None, min_length=1, description="Reply with these function calls instead of text."
    )
    handoff: str | None = Field(
        default=None,
        min_length=1,
        description="Hand off to this agent: shorthand for one call of the tool 'transfer_to_<handoff>' "
        "with no arguments.",
    )
    error: str | None = Field(
        default=None, description="Fail the model call with this error message instead of replying."
    )
    error_kind: Literal["model_error", "rate_limited", "transient"] = Field(
        default="model_error",
        description="With `error`: `rate_limited` and `transient` errors are retried by the server, "
        "`model_error` is not.",
    )
    hang: bool | None = Field(default=None, description="Never answer this call (until it is cancelled or times out).")
    delay_ms: int | None = Field(
        default=None,
        ge=0,
        description="Delay in milliseconds before each streamed chunk after the first, for this step only "
        "(overrides the model variant's delay).",
    )

    @model_validator(mode="after")
    def _exactly_one_action(self) -> ScriptStep:
        check_one_action(self)
        return self


class ModelOptions(StrictModel):
    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int | None = Field(default=None, ge=1, le=200_000, description="Cap on reply tokens.")
    script: list[ScriptStep] | None = Field(
        default=None,
        max_length=200,
        description="`fake` provider only: scripted replies (text, tool calls, hand-offs, errors) in order.",
    )


class AgentSpec(StrictModel):
    """An agent, as stored and as placed inline in a team."""

    name: Name
    kind: Literal["assistant", "user_proxy"] = Field(
        default="assistant",
        description=(
            "`assistant` (a model answers) or `user_proxy` (a person answers: the run waits in "
            "`awaiting_input` after an `input.requested` event)."
        ),
    )
    description: str = Field(default="", max_length=2000, description="What the agent does (selectors read it).")
    system_message: str | None = Field(default=None, max_length=50_000, description="The agent's instructions.")
    model: str | None = Field(
        default=None,
        max_length=200,
        description="`provider/model`, e.g. `openai/gpt-4o-mini` or `fake/t64-d20`; absent: the server default.",
        examples=["fake/default"],
    )
    model_options: ModelOptions | None = Field(default=None, description="Per-agent model settings.")
    tools: list[str] = Field(
        default_factory=list, max_length=32, description="Names of tools from the server's tool registry."
    )
    approve_tools: list[str] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Tools of this agent (named in `tools`) whose every call waits for a person's approval, besides "
            "those the operator marks (`SWARM_TOOLS_REQUIRE_APPROVAL`): the run asks with an `input.requested` "
            "of kind `approval` (docs/human-in-the-loop.md)."
        ),
    )
    handoffs: list[str] = Field(
        default_factory=list, max_length=32, description="Swarm teams only: agents this one may hand off to."
    )
    streaming: bool = Field(default=True, description="Stream tokens as `message.delta` events.")
    reflect_on_tool_use: bool = Field(default=False, description="Let the model summarise tool results.")
    max_tool_iterations: int = Field(default=1, ge=1, le=20, description="Tool-call rounds per turn.")


class AgentRead(AgentSpec):
    id: str = Field(examples=["agt_01JDAX3G4F6Q3C9W8R4T0M2N7B"])
    object: Literal["agent"] = "agent"
    created_at: datetime
    updated_at: datetime
