"""Tool approval in the engine: the registry's flags, and a tool that asks its run's gate before it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_core import CancellationToken
from autogen_core.tools import StaticWorkbench

from app.engine.approvals import ApprovalRequest, EditedCall, InvalidToolArguments, ToolDecision
from app.engine.tools import ToolContext, ToolRegistry


class Gate:
    """Answers every request with the next scripted decision, and keeps the requests."""

    def __init__(self, *decisions: ToolDecision) -> None:
        self.decisions = list(decisions)
        self.asked: list[ApprovalRequest] = []

    async def __call__(self, request: ApprovalRequest) -> ToolDecision:
        self.asked.append(request)
        return self.decisions.pop(0)


def context(gate: Any = None) -> ToolContext:
    return ToolContext("run", "conv", "p", None, approvals=gate)  # type: ignore[arg-type]


async def call(tool: Any, arguments: dict[str, Any]) -> tuple[str, bool]:
    """One call through AutoGen's workbench, as an agent makes it: the result text the model reads."""
    result = await StaticWorkbench([tool]).call_tool(tool.name, arguments, CancellationToken(), call_id="call_7")
    return result.to_text(), result.is_error


def test_the_registry_keeps_who_needs_approval_and_what_may_run_again() -> None:
    registry = ToolRegistry.with_builtins()
    assert all(registry.idempotent(n) for n in ("calculator", "current_time", "search_history"))
    assert not any(registry.requires_approval(n) for n in registry.names())

    async def send(to: str) -> str:
        return to

    registry.register(send, requires_approval=True)
    registry.register_builder(lambda _ctx: send, name="send_too", description="Send.", idempotent=True)
    assert registry.requires_approval("send") and not registry.idempotent("send")
    assert registry.idempotent("send_too") and not registry.requires_approval("send_too")
    registry.mark(requires_approval=["calculator"], idempotent=["send"])
    assert registry.requires_approval("calculator") and registry.idempotent("send")
    with pytest.raises(ValueError, match=r"'nope'.*known: calculator"):
        registry.mark(requires_approval=["nope"])
    with pytest.raises(ValueError, match="'gone'"):
        registry.mark(idempotent=["gone"])


async def test_approve_runs_the_call_as_asked() -> None:
    gate = Gate(ToolDecision("approve"))
    tool = ToolRegistry.with_builtins().build("calculator", context(gate), agent="solver", approve=True)
    assert await call(tool, {"expression": "2 + 3"}) == ("5", False)
    (asked,) = gate.asked
    assert (asked.agent, asked.tool, asked.call_id, asked.arguments) == (
        "solver",
        "calculator",
        "call_7",
        {"expression": "2 + 3"},
    )


async def test_reject_gives_the_model_an_error_saying_a_person_declined_it() -> None:
    tool = ToolRegistry.with_builtins().build(
        "calculator", context(Gate(ToolDecision("reject", reason="not now"))), agent="solver", approve=True
    )
    text, is_error = await call(tool, {"expression": "2 + 3"})
    assert is_error
    assert text == "A person declined this call of the tool 'calculator'; it did not run. Their reason: not now"


async def test_edit_runs_the_call_with_the_edited_arguments_and_says_so() -> None:
    tool = ToolRegistry.with_builtins().build(
        "calculator", context(Gate(ToolDecision("edit", {"expression": "3 * 3"}))), agent="solver", approve=True
    )
    text, is_error = await call(tool, {"expression": "2 + 3"})
    assert not is_error
    assert text == str(EditedCall("9", {"expression": "3 * 3"}))
    assert text.endswith('it ran with {"expression": "3 * 3"}. Result: 9')


async def test_a_call_the_tool_refuses_is_not_asked_about() -> None:
    gate = Gate()
    tool = ToolRegistry.with_builtins().build("calculator", context(gate), agent="solver", approve=True)
    text, is_error = await call(tool, {"expr": "1"})
    assert is_error and "expression" in text
    assert gate.asked == []


async def test_the_operator_flag_asks_for_every_agent_and_nobody_to_ask_fails_closed() -> None:
    registry = ToolRegistry.with_builtins()
    registry.mark(requires_approval=["calculator"])
    gate = Gate(ToolDecision("approve"))
    assert await call(registry.build("calculator", context(gate), agent="a"), {"expression": "1+1"}) == ("2", False)
    assert len(gate.asked) == 1
    text, is_error = await call(registry.build("calculator", context(None), agent="a"), {"expression": "1+1"})
    assert is_error and "needs a person's approval" in text
    # a tool nobody marked runs without asking, and the shared (first built) tool never asks
    plain = ToolRegistry.with_builtins()
    assert await call(plain.build("calculator", context(Gate()), agent="a"), {"expression": "1+1"}) == ("2", False)
    assert await call(plain.build("calculator", context(None)), {"expression": "2+2"}) == ("4", False)


def test_edited_arguments_are_checked_against_the_tools_model() -> None:
    registry = ToolRegistry.with_builtins()
    assert registry.check_arguments("calculator", {"expression": "1"}) == {"expression": "1"}
    with pytest.raises(InvalidToolArguments, match="expression: Field required"):
        registry.check_arguments("calculator", {"expr": "1"})
    with pytest.raises(InvalidToolArguments, match="limit"):
        registry.check_arguments("search_history", {"query": "x", "limit": "many"})  # built over no run


def test_a_decision_travels_as_text_and_a_plain_answer_is_never_one() -> None:
    for decision in (ToolDecision("approve"), ToolDecision("reject", reason="no"), ToolDecision("edit", {"a": [1]})):
        assert ToolDecision.from_wire(decision.to_wire()) == decision
    for plain in ("yes", '{"decision": "approve"}', "swarmdirector.tool_decision:{bad json", ""):
        assert ToolDecision.from_wire(plain) is None
    with pytest.raises(ValueError):
        ToolDecision("edit")
    with pytest.raises(ValueError):
        ToolDecision("approve", {"a": 1})


async def test_a_run_stopped_while_the_person_decides_gives_an_error_result_not_a_cancelled_call() -> None:
    asked = asyncio.Event()

    async def never(request: ApprovalRequest) -> ToolDecision:
        asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    tool = ToolRegistry.with_builtins().build("calculator", context(never), agent="solver", approve=True)
    token = CancellationToken()
    called = asyncio.ensure_future(StaticWorkbench([tool]).call_tool("calculator", {"expression": "1"}, token, "c"))
    await asked.wait()
    token.cancel()  # AutoGen's agent would wait forever for a call that ended cancelled
    result = await called
    assert result.is_error and "stopped while this call of the tool 'calculator' waited" in result.to_text()
