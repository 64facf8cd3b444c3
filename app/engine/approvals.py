"""Tool approval: a person decides whether a call of a tool that needs it runs, as asked or edited.

The engine knows the run's person only as an ``ApprovalGate``: a tool that needs approval (the operator's
``requires_approval``, or an agent's ``approve_tools``) asks it before it runs (``TimedTool``) and gets a
``ToolDecision``. The run supplies the gate (``app/runtime/run/humans.py``); how it asks, how long it
waits and where the answer is recorded are the run's business. A decision travels to the run as text
(``to_wire``/``from_wire``): an answer reaches a run through the same path as any input, which carries text.

What the model sees: approved, the tool's result; edited, the result and the arguments it ran with
(``EditedCall``); rejected, an error result (``ToolDeclined``) saying that a person declined it, and why.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from autogen_agentchat.messages import BaseTextChatMessage
from pydantic import BaseModel, ValidationError

Decision = Literal["approve", "reject", "edit"]
DECISIONS: tuple[Decision, ...] = ("approve", "reject", "edit")
# marks an answer's text as a decision: a plain answer that happens to be JSON is never taken for one
_WIRE_PREFIX = "swarmdirector.tool_decision:"


class InvalidToolArguments(ValueError):
    """Edited arguments that the tool's argument model refuses; the text says which and why."""


def check_arguments(args_type: type[BaseModel], arguments: Mapping[str, Any], tool: str) -> dict[str, Any]:
    """``arguments`` as given, once the tool's argument model accepts them; ``InvalidToolArguments`` if not."""
    try:
        args_type.model_validate(dict(arguments))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise InvalidToolArguments(f"The arguments do not fit the tool '{tool}': {problems}.") from None
    return dict(arguments)


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """A person's answer to an approval request: run the call, run it with ``arguments``, or not (``reason``)."""

    decision: Decision
    arguments: dict[str, Any] | None = None  # edit only: what the call runs with
    reason: str | None = None  # the person's note (on a reject, what the model is told)

    def __post_init__(self) -> None:
        if (self.decision == "edit") != (self.arguments is not None):
            raise ValueError("arguments come with an edit, and only with an edit")

    def to_wire(self) -> str:
        body: dict[str, Any] = {"decision": self.decision}
        if self.arguments is not None:
            body["arguments"] = self.arguments
        if self.reason is not None:
            body["reason"] = self.reason
        return _WIRE_PREFIX + json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_wire(cls, text: str) -> ToolDecision | None:
        """The decision ``text`` carries; None for a plain answer (or one that is not well formed)."""
        if not text.startswith(_WIRE_PREFIX):
            return None
        try:
            body = json.loads(text.removeprefix(_WIRE_PREFIX))
            decision, arguments, reason = body["decision"], body.get("arguments"), body.get("reason")
            if decision not in DECISIONS or not (arguments is None or isinstance(arguments, dict)):
                return None
            return cls(decision, arguments, reason if isinstance(reason, str) else None)
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A call waiting for a person's approval: who calls what, with which arguments."""

    agent: str
    tool: str
    call_id: str | None  # the model's id of the call (its ``tool.call``'s); None when a call has none
    arguments: dict[str, Any]
    # validates edited arguments against the tool's argument model (``check_arguments``)
    check: Callable[[Mapping[str, Any]], dict[str, Any]] = field(repr=False, compare=False)


class ApprovalGate(Protocol):
    """Asks the run's person about a call, and gives their decision (an edit's arguments already checked)."""

    def __call__(self, request: ApprovalRequest) -> Awaitable[ToolDecision]: ...


class ToolDeclined(Exception):
    """A person declined the call: AutoGen gives the model this text as the call's (error) result."""

    def __init__(self, tool: str, reason: str | None) -> None:
        text = f"A person declined this call of the tool '{tool}'; it did not run."
        if reason:
            text += f" Their reason: {reason}"
        super().__init__(text)


class ApprovalStopped(Exception):
    """The run stopped while the call waited for a person's decision: it did not run."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"The run stopped while this call of the tool '{tool}' waited for approval; it did not run.")


class NoApprover(Exception):
    """The tool needs approval and the run that calls it has nobody to ask (no ``ToolContext.approvals``)."""


async def no_approver(request: ApprovalRequest) -> ToolDecision:
    raise NoApprover(f"The tool '{request.tool}' needs a person's approval, which this run cannot ask for.")


@dataclass(frozen=True, slots=True)
class EditedCall:
    """The result of a call a person edited: the model is told what it ran with."""

    result: str
    arguments: dict[str, Any]

    def __str__(self) -> str:
        edited = json.dumps(self.arguments, ensure_ascii=False)
        return f"A person edited the arguments of this call; it ran with {edited}. Result: {self.result}"


class ToolApprovalMessage(BaseTextChatMessage):
    """A person's decision on a tool's call, as the conversation's history keeps it (by `user`): stored
    with the run's messages, never given to a team (a later run's history replays its text)."""

    tool: str
    call_id: str | None = None
    decision: Decision
    arguments: dict[str, Any] | None = None  # an edit's
