"""The run's side of an answer: a request takes only its kind of answer, and only once."""

from __future__ import annotations

import pytest

from app.core.errors import InvalidSpec
from app.engine.approvals import ApprovalRequest, ToolDecision
from app.engine.tools import ToolRegistry
from app.runtime.inputs import NotAwaitingInput, PendingApproval, PendingInput, UnknownInputRequest


def approval() -> PendingApproval:
    registry = ToolRegistry.with_builtins()
    check = lambda arguments: registry.check_arguments("calculator", arguments)  # noqa: E731
    pending = PendingApproval("req", ApprovalRequest("solver", "calculator", "call_1", {"expression": "1"}, check))
    pending.announced = True
    return pending


async def test_an_approval_takes_one_decision_with_its_edit_checked() -> None:
    pending = approval()
    for content, code in (
        ("yes", "decision_required"),
        (ToolDecision("edit", {"x": 1}).to_wire(), "invalid_tool_arguments"),
    ):
        with pytest.raises(InvalidSpec) as refused:
            pending.provide("req", content)
        assert refused.value.code == code
    with pytest.raises(UnknownInputRequest):
        pending.provide("other", ToolDecision("approve").to_wire())
    assert not pending.answer.done()
    pending.provide("req", ToolDecision("edit", {"expression": "2"}, "smaller").to_wire())
    assert pending.answer.result() == ToolDecision("edit", {"expression": "2"}, "smaller")
    with pytest.raises(NotAwaitingInput):
        pending.provide("req", ToolDecision("approve").to_wire())


async def test_a_plain_request_takes_no_decision() -> None:
    pending = PendingInput("req", "human", announced=True)
    with pytest.raises(InvalidSpec) as refused:
        pending.provide("req", ToolDecision("approve").to_wire())
    assert refused.value.code == "not_an_approval_request"
    pending.provide("req", "Hello.")
    assert pending.answer.result() == "Hello."
