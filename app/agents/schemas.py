"""The agent spec: what a client may say about an agent. Data only, never code."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import Name, StrictModel
from app.engine.fake import ScriptStep


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
