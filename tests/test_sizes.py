"""The run engine stays small (issue 21): in ``app/runtime`` no function body runs past 50 lines
and no class keeps more than 10 attributes it changes after ``__init__`` (its mutable state).
Read from the source with ``ast``; a docstring does not count towards a function's length."""

from __future__ import annotations

import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "app" / "runtime"
MAX_LINES = 50
MAX_MUTABLE = 10

Function = ast.FunctionDef | ast.AsyncFunctionDef


def body_lines(fn: Function) -> int:
    body = fn.body
    docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1
    start = body[1].lineno if docstring else body[0].lineno
    return (fn.end_lineno or start) - start + 1


def mutable_attributes(cls: ast.ClassDef) -> set[str]:
    """``self.x`` assigned in a method other than ``__init__``."""
    found: set[str] = set()
    for fn in cls.body:
        if not isinstance(fn, Function) or fn.name == "__init__":
            continue
        for node in ast.walk(fn):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign | ast.AugAssign)
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    found.add(target.attr)
    return found


def trees() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text("utf-8"))) for path in sorted(RUNTIME.rglob("*.py"))]


def test_no_function_of_the_runtime_runs_past_50_lines() -> None:
    long = [
        f"{path.relative_to(RUNTIME.parent.parent)}:{node.lineno} {node.name} ({body_lines(node)} lines)"
        for path, tree in trees()
        for node in ast.walk(tree)
        if isinstance(node, Function) and body_lines(node) > MAX_LINES
    ]
    assert not long, "split these:\n" + "\n".join(long)


def test_no_class_of_the_runtime_keeps_more_than_10_mutable_attributes() -> None:
    big = [
        f"{path.relative_to(RUNTIME.parent.parent)}:{node.lineno} {node.name}: {sorted(mutable_attributes(node))}"
        for path, tree in trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and len(mutable_attributes(node)) > MAX_MUTABLE
    ]
    assert not big, "split these:\n" + "\n".join(big)


def test_the_measures_count_what_they_say() -> None:
    source = "class C:\n    def __init__(self):\n        self.a = 1\n    def f(self):\n        '''doc'''\n"
    source += "        self.b = 2\n        self.c += 1\n        x = 3\n        return x\n"
    tree = ast.parse(source)
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    assert mutable_attributes(cls) == {"b", "c"}
    method = cls.body[1]
    assert isinstance(method, ast.FunctionDef) and body_lines(method) == 4
