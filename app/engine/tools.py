"""The server's tool registry: agents name tools, the server owns their code.

A team spec can only refer to tools registered here, so loading a team never
executes code that came with a request.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from autogen_core.tools import BaseTool, FunctionTool

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


class ToolRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], BaseTool[Any, Any]]] = {}

    def register(self, name: str, func: Callable[..., Any], description: str) -> None:
        self._factories[name] = lambda: FunctionTool(func, description=description, name=name)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def build(self, name: str) -> BaseTool[Any, Any]:
        return self._factories[name]()

    @classmethod
    def with_builtins(cls) -> ToolRegistry:
        registry = cls()
        registry.register("calculator", calculator, "Evaluate an arithmetic expression.")
        registry.register("current_time", current_time, "Get the current UTC date and time.")
        return registry
