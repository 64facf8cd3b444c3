"""A built FunctionTool calling another function of the same code (app/patches/autogen_function_tool.py):
it answers as a tool built afresh for that function would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from autogen_core import CancellationToken
from autogen_core.tools import FunctionTool

from app.patches.autogen_function_tool import function_of, rebound


def greeter(greeting: str) -> Callable[[str], str]:
    def greet(name: str) -> str:
        """Greets someone."""
        return f"{greeting}, {name}"

    return greet


async def test_a_rebound_tool_answers_as_one_built_for_its_function() -> None:
    hello, welcome = greeter("hello"), greeter("welcome")
    tool = FunctionTool(hello, description="greets", name="greet")
    twin = rebound(tool, welcome)
    fresh = FunctionTool(welcome, description="greets", name="greet")
    args = {"name": "ann"}
    token = CancellationToken()
    assert await twin.run_json(args, token) == await fresh.run_json(args, token) == "welcome, ann"
    assert await tool.run_json(args, token) == "hello, ann"  # the original is untouched
    assert twin.schema == fresh.schema and twin.args_type() is tool.args_type()
    assert function_of(twin) is welcome and function_of(tool) is hello


def test_a_function_of_other_code_is_refused() -> None:
    tool = FunctionTool(greeter("hello"), description="greets", name="greet")

    def other(name: str) -> str:
        return name

    with pytest.raises(ValueError, match="same code"):
        rebound(tool, other)
