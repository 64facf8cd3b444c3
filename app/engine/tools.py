"""The server's tool registry: agents name tools, the server owns their code.

A team spec can only refer to tools registered here, so loading a team never
executes code that came with a request. Tools are registered in code, or by
the operator through ``SWARM_TOOLS`` (``module:function`` entry points).
Every call is bounded by a timeout; a tool that raises or times out gives the
model an error result (``is_error``) and the run goes on. Some tools need to
know whose run calls them (the history search reads the run's own
conversation), so each run builds its tools from a ``ToolContext``; what a tool reads of the
server, it reads through the context (``HistorySearch``), never a repository of its own.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, FunctionTool, ToolSchema
from pydantic import BaseModel

from app.patches.autogen_function_tool import function_of, rebound


class FoundMessage(Protocol):
    """A stored message of a conversation, as the history search reports it."""

    @property
    def position(self) -> int: ...
    @property
    def agent(self) -> str: ...
    @property
    def content(self) -> str: ...


class HistorySearch(Protocol):
    """Reads a conversation's stored messages that mention ``query`` (any case), newest first, at most ``limit``.

    The conversations domain supplies it (``app.conversations.repository.MessageSearch``).
    """

    def __call__(self, conversation_id: str, query: str, limit: int) -> Awaitable[Sequence[FoundMessage]]: ...


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the run that calls it."""

    run_id: str
    conversation_id: str
    principal_id: str
    history: HistorySearch


ToolBuilder = Callable[[ToolContext], Callable[..., Any]]


class TimedTool(FunctionTool):
    """A function tool whose every call is bounded by a timeout."""

    def __init__(self, func: Callable[..., Any], *, name: str, description: str, timeout_s: float) -> None:
        super().__init__(func, description=description, name=name)
        self._timeout_s = timeout_s
        self._schema: ToolSchema | None = None

    @property
    def schema(self) -> ToolSchema:
        # AutoGen derives it from the arguments model on every model call; it never changes
        if self._schema is None:
            self._schema = super().schema
        return self._schema

    def for_function(self, func: Callable[..., Any]) -> TimedTool:
        """This tool calling ``func``, a function of the same code (a per-run builder's, over another context).

        ``FunctionTool`` builds a pydantic model of the arguments from the function's signature, about
        0.4 ms, on every construction: per tool, per agent, per run. A copy shares the model.
        """
        return rebound(self, func)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await super().run(args, cancellation_token)
        except TimeoutError:
            raise TimeoutError(f"the tool '{self.name}' did not finish within {self._timeout_s:g} s") from None


# -- built-in tools ------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ValueError("only numbers and + - * / // % ** are allowed")


async def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as `2 * (3 + 4)`."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    result = _evaluate(ast.parse(expression, mode="eval"))
    return str(int(result)) if result == int(result) else str(result)


async def current_time() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def history_search(ctx: ToolContext) -> Callable[..., Any]:
    async def search_history(query: str, limit: int = 5) -> str:
        """Search this conversation's earlier messages for a word or phrase; newest matches first."""
        if not query.strip():
            raise ValueError("the query is empty")
        found = await ctx.history(ctx.conversation_id, query.strip(), max(1, min(limit, 20)))
        if not found:
            return f"No earlier message mentions {query!r}."
        return "\n".join(f"[{m.position}] {m.agent}: {m.content[:300]}" for m in found)

    return search_history


# -- the registry --------------------------------------------------------------------------------


class ToolRegistry:
    def __init__(self, timeout_s: float = 30.0) -> None:
        self._builders: dict[str, tuple[ToolBuilder, str]] = {}
        self._built: dict[str, TimedTool] = {}  # per name, the first tool built: its argument model is reused
        self.timeout_s = timeout_s

    def register(self, func: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> None:
        """A plain typed function (async or not) as a tool."""
        self.register_builder(lambda _ctx: func, name=name or func.__name__, description=description or _doc(func))

    def register_builder(self, builder: ToolBuilder, *, name: str, description: str) -> None:
        """A tool made per run from its context."""
        if name in self._builders:
            raise ValueError(f"a tool named '{name}' is registered already")
        self._builders[name] = (builder, description)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def build(self, name: str, ctx: ToolContext) -> BaseTool[Any, Any]:
        builder, description = self._builders[name]
        func = builder(ctx)
        first = self._built.get(name)
        code = getattr(func, "__code__", None)
        if first is not None and code is not None and code is getattr(function_of(first), "__code__", None):
            return first.for_function(func)  # the same code, so the same signature
        tool = TimedTool(func, name=name, description=description, timeout_s=self.timeout_s)
        self._built[name] = tool
        return tool

    def load_entry_points(self, specs: list[str]) -> None:
        """Register ``module:function`` callables named by the operator (settings, never requests)."""
        for spec in specs:
            module_name, _, attr = spec.partition(":")
            if not module_name or not attr:
                raise ValueError(f"tool entry point {spec!r} is not of the form module:function")
            func = getattr(importlib.import_module(module_name), attr)
            if not callable(func):
                raise ValueError(f"tool entry point {spec!r} is not callable")
            self.register(func)

    @classmethod
    def with_builtins(cls, timeout_s: float = 30.0) -> ToolRegistry:
        registry = cls(timeout_s)
        registry.register(calculator, description="Evaluate an arithmetic expression.")
        registry.register(current_time, description="Get the current UTC date and time.")
        registry.register_builder(
            history_search, name="search_history", description="Search this conversation's earlier messages."
        )
        return registry


def _doc(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) or f"The {func.__name__} tool."
    return doc.strip().splitlines()[0]
