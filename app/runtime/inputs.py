"""Human in the loop: the one input request a run may be waiting on, and how it is answered.

A ``PendingInput`` takes an answer (text); a ``PendingApproval`` (a tool's call) takes a decision, which
travels as text too (``ToolDecision.to_wire``), its edited arguments checked against the tool."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar

from app.core.errors import Conflict, InvalidSpec
from app.engine.approvals import ApprovalRequest, InvalidToolArguments, ToolDecision
from app.runs.answers import DecisionRequired, NotAnApprovalRequest, approval_prompt


class NotAwaitingInput(Conflict):
    code = "not_awaiting_input"
    title = "The run is not waiting for input"


class UnknownInputRequest(Conflict):
    code = "unknown_input_request"
    title = "Unknown input request"


class Park(Exception):
    """Raised from a user proxy's input function to stop the team at the person's turn: the run parks
    (``app/runtime/parking.py``). AutoGen wraps it; the run knows it parked by its own flag."""


# AutoGen's UserProxyAgent always asks with this prompt
DEFAULT_PROMPT = "Enter your response: "


@dataclass(slots=True)
class PendingInput:
    request_id: str
    agent: str
    prompt: str = DEFAULT_PROMPT
    announced: bool = False  # `input.requested` is out: only then may anyone answer
    received: bool = False  # `input.received` is out
    answer: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    kind: ClassVar[str] = "input"

    def provide(self, request_id: str, content: str) -> None:
        _check_open(self, request_id)
        if ToolDecision.from_wire(content) is not None:
            raise NotAnApprovalRequest(f"Input request '{request_id}' asks for an answer (`content`), not a decision.")
        self.answer.set_result(content)


@dataclass(slots=True)
class PendingApproval:
    """A call of a tool waiting for a person's decision (``Humans.approve``)."""

    request_id: str
    call: ApprovalRequest
    announced: bool = False
    received: bool = False
    answer: asyncio.Future[ToolDecision] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    kind: ClassVar[str] = "approval"

    @property
    def agent(self) -> str:
        return self.call.agent

    @property
    def prompt(self) -> str:
        return approval_prompt(self.call.agent, self.call.tool)

    def provide(self, request_id: str, content: str) -> None:
        """Take the decision ``content`` carries (``ToolDecision.to_wire``), edited arguments checked."""
        _check_open(self, request_id)
        decision = ToolDecision.from_wire(content)
        if decision is None:
            raise DecisionRequired(f"Input request '{request_id}' asks for a decision: approve, reject or edit.")
        if decision.arguments is not None:
            try:
                decision = ToolDecision("edit", self.call.check(decision.arguments), decision.reason)
            except InvalidToolArguments as exc:
                raise InvalidSpec.at(["body", "arguments"], str(exc), code="invalid_tool_arguments") from None
        self.answer.set_result(decision)


def _check_open(pending: PendingInput | PendingApproval, request_id: str) -> None:
    """The request may be answered now, and ``request_id`` names it."""
    if not pending.announced or pending.answer.done():
        raise NotAwaitingInput("The run is no longer waiting for that input.")
    if request_id != pending.request_id:
        raise UnknownInputRequest(f"The run is waiting for input request '{pending.request_id}', not '{request_id}'.")
