"""A built ``FunctionTool`` calling another function of the same code, without being built again.

Written for autogen-core 0.7.5 (a private attribute read and written: ``FunctionTool._func``).

``FunctionTool`` builds a pydantic model of its function's arguments from the signature every
time one is made: per tool, per agent, per run, though a registry's tool is built by the same
builder each time and only the context it closes over differs (``TimedTool`` in
``app/engine/tools.py``). A copy costs 1.6 us against 130-180 us to build one
(docs/performance.md, section 6; the benchmark's teams have no tools, so ``make bench`` cannot
see it). It keeps everything AutoGen derived from the signature (the arguments model,
``_signature``, ``_has_cancellation_support``) and calls the new function, which is right only
when that function has the same code, so ``rebound`` checks that.
``tests/patches/test_autogen_function_tool.py`` holds a rebound tool to a tool built afresh.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

from autogen_core.tools import FunctionTool

ToolT = TypeVar("ToolT", bound=FunctionTool)


def function_of(tool: FunctionTool) -> Callable[..., Any]:
    """The function the tool calls."""
    func: Callable[..., Any] = tool._func
    return func


def rebound(tool: ToolT, func: Callable[..., Any]) -> ToolT:
    """A copy of ``tool`` that calls ``func``, a function of the same code (so of the same signature)."""
    code = getattr(func, "__code__", None)
    if code is None or code is not getattr(function_of(tool), "__code__", None):
        raise ValueError(f"the tool '{tool.name}' can only call a function of the same code as its own")
    twin = copy.copy(tool)
    twin._func = func
    return twin
