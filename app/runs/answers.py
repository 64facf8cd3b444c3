"""Answers to a run's input requests: what each kind of request takes, and what an approval's events say.

A request (``input.requested``) is of kind ``input`` (a user proxy's turn, a swarm's hand-off to the user:
it takes text, ``content``) or ``approval`` (a call of a tool that needs a person's approval: it takes a
``decision``, approve, reject or edit). ``answer_text`` checks an answer against the stored request, so
that a wrong kind of answer, an edit without arguments, or arguments the tool refuses are refused before
any run hears of it, wherever the run executes (or, later, parks); and gives the text the answer travels
as. The run that asked checks it again when it takes it (``app/runtime/inputs.py``).

The events and the history of an approval are made here too, the same for every path that answers one:
``approval_requested`` (the request's ``kind`` and ``tool``), ``approval_received`` (the answer's
``decision``, ``arguments``, ``reason``, and as ``content`` the text of the person's message that the
conversation's history keeps, ``decision_text``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.core.errors import InvalidSpec
from app.engine.approvals import ApprovalRequest, InvalidToolArguments, ToolDecision
from app.engine.tools import ToolRegistry
from app.runs.schemas import InputCreate


class DecisionRequired(InvalidSpec):
    """An answer without a decision to a tool's approval request."""

    code = "decision_required"
    title = "The request asks for a decision"


class NotAnApprovalRequest(InvalidSpec):
    """A decision sent to a request that asks for an answer."""

    code = "not_an_approval_request"
    title = "The request is not an approval request"


def approval_prompt(agent: str, tool: str) -> str:
    """What an approval request says to the person."""
    return f"{agent} wants to call the tool '{tool}'. Approve, reject, or edit its arguments."


def approval_requested(request: ApprovalRequest) -> dict[str, Any]:
    """An approval's ``input.requested`` fields besides ``request_id``, ``agent`` and ``prompt``."""
    tool = {"name": request.tool, "call_id": request.call_id, "arguments": request.arguments}
    return {"kind": "approval", "tool": tool}


def approval_received(decision: ToolDecision, tool: str, asked: Mapping[str, Any]) -> dict[str, Any]:
    """An approval's ``input.received`` fields besides ``request_id`` and ``agent``."""
    data: dict[str, Any] = {"content": decision_text(decision, tool, asked), "decision": decision.decision}
    if decision.arguments is not None:
        data["arguments"] = decision.arguments
    if decision.reason is not None:
        data["reason"] = decision.reason
    return data


def decision_text(decision: ToolDecision, tool: str, asked: Mapping[str, Any]) -> str:
    """The person's decision as the history tells it (a ``ToolApprovalMessage`` by `user`)."""
    call = f"the call of '{tool}' with {_json(asked)}"
    if decision.decision == "approve":
        text = f"Approved {call}."
    elif decision.decision == "reject":
        text = f"Declined {call}."
    else:
        text = f"Edited {call}: it runs with {_json(decision.arguments or {})}."
    if decision.reason:
        text += f" {'Reason' if decision.decision == 'reject' else 'Note'}: {decision.reason}"
    return text


def answer_text(requested: Mapping[str, Any] | None, body: InputCreate, tools: ToolRegistry) -> str:
    """The text ``body`` travels as to the run, once it fits ``requested`` (the stored ``input.requested``
    data; None when there is none by that id, which the run answers for). Raises a 422 if it does not."""
    kind = str(requested.get("kind", "input")) if requested is not None else None
    if body.decision is None:
        if kind == "approval":
            raise DecisionRequired(
                "The request asks for a decision: send `decision` (approve, reject or edit), not only `content`."
            )
        if body.arguments is not None:
            raise _at("arguments", "`arguments` come with the decision `edit`.", "arguments_without_edit")
        if body.content is None:
            raise _at("content", "The answer has no `content`.", "content_required")
        return body.content
    if kind == "input":
        raise NotAnApprovalRequest("The request asks for an answer (`content`), not a decision.")
    arguments = None
    if body.decision == "edit":
        if body.arguments is None:
            raise _at("arguments", "An `edit` gives the call's new `arguments`.", "edit_arguments_required")
        arguments = _checked(requested, body.arguments, tools)
    elif body.arguments is not None:
        raise _at("arguments", "`arguments` come with the decision `edit`.", "arguments_without_edit")
    return ToolDecision(body.decision, arguments, body.content).to_wire()


def _checked(requested: Mapping[str, Any] | None, arguments: dict[str, Any], tools: ToolRegistry) -> dict[str, Any]:
    tool = requested.get("tool") if requested is not None else None
    name = tool.get("name") if isinstance(tool, dict) else None
    if not isinstance(name, str) or name not in tools:
        return arguments  # the run checks them against its own tool
    try:
        return tools.check_arguments(name, arguments)
    except InvalidToolArguments as exc:
        raise _at("arguments", str(exc), "invalid_tool_arguments") from None


def _at(field: str, msg: str, code: str) -> InvalidSpec:
    return InvalidSpec.at(["body", field], msg, code=code)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
