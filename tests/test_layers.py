"""The layers of ``app/`` point down: a ratchet against new backward imports and import cycles.

The rules (issue 21): ``app/core`` (the shared plumbing) imports no domain, runtime or engine
module; ``app/engine`` knows no router, repository or domain schema, only ``app/core``; the fake
model's types do not leak into a public schema; and no two modules import each other, directly or
round a circle, counting imports made inside functions and under ``TYPE_CHECKING``.

Today's code breaks them in the places listed below, which the redesign of issue 21 removes. A new
break fails this test; so does a listed one that is gone (take it off the list, so that it stays
gone). Imports are read from the source with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# (importer, imported) pairs that break a rule today: issue 21 empties these
KNOWN_CORE_UP = {
    ("app.core.deps", "app.auth.service"),
    ("app.core.deps", "app.engine.providers"),
    ("app.core.deps", "app.runtime.manager"),
    ("app.core.limits", "app.runs.repository"),
    ("app.core.logging", "app.engine.calls"),
    ("app.core.metrics", "app.engine.calls"),
    ("app.core.middleware", "app.auth.service"),
    ("app.core.schema", "app.agents.models"),
    ("app.core.schema", "app.auth.models"),
    ("app.core.schema", "app.conversations.models"),
    ("app.core.schema", "app.runs.models"),
    ("app.core.schema", "app.teams.models"),
    ("app.core.services", "app.auth.service"),
    ("app.core.services", "app.engine.providers"),
    ("app.core.services", "app.engine.tools"),
    ("app.core.services", "app.runtime.bus"),
    ("app.core.services", "app.runtime.cluster"),
    ("app.core.services", "app.runtime.manager"),
    ("app.core.services", "app.runtime.recorder"),
    ("app.core.services", "app.runtime.redis_bus"),
}
KNOWN_ENGINE_UP = {
    ("app.engine.factory", "app.agents.schemas"),
    ("app.engine.factory", "app.teams.schemas"),
    ("app.engine.graphs", "app.teams.schemas"),
    ("app.engine.providers", "app.agents.schemas"),
    ("app.engine.tools", "app.conversations.repository"),
}
KNOWN_FAKE_IN_SCHEMAS = {("app.agents.schemas", "app.engine.fake")}
# each circle as the sorted modules it joins
KNOWN_CYCLES = {
    ("app.runtime.chain", "app.runtime.execution"),
}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The ``app`` modules ``name`` imports anywhere in its source (a name imported from a package
    that is a module of its own counts as that module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("app.") and target in known and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports_of(name, path, known)) for name, path in known.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def cycles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.add(tuple(sorted(group)))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def check(name: str, now: set[tuple[str, ...]], known: set[tuple[str, ...]]) -> None:
    new, gone = now - known, known - now
    assert not new, f"{name}: new, not allowed: {sorted(new)}"
    assert not gone, f"{name}: gone (good): take them off the list in tests/test_layers.py: {sorted(gone)}"


def test_core_imports_nothing_above_it() -> None:
    edges = graph()
    up = {(a, b) for a, targets in edges.items() if layer(a) == "core" for b in targets if layer(b) != "core"}
    check("app/core imports from above", up, KNOWN_CORE_UP)


def test_the_engine_knows_only_core() -> None:
    edges = graph()
    allowed = {"core", "engine"}
    up = {(a, b) for a, targets in edges.items() if layer(a) == "engine" for b in targets if layer(b) not in allowed}
    check("app/engine imports from above", up, KNOWN_ENGINE_UP)


def test_the_fake_model_stays_out_of_public_schemas() -> None:
    edges = graph()
    leaks = {
        (a, b) for a, targets in edges.items() if a.endswith(".schemas") for b in targets if b == "app.engine.fake"
    }
    check("the fake model in a public schema", leaks, KNOWN_FAKE_IN_SCHEMAS)


def test_no_new_import_cycle() -> None:
    check("import cycles", cycles(graph()), KNOWN_CYCLES)


def test_the_reader_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "app" / "x"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from app.x import b\n    from .c import thing\n")
    (pkg / "b.py").write_text("import app.x.a\n")
    (pkg / "c.py").write_text("thing = 1\n")
    known = {"app.x": pkg / "__init__.py", "app.x.a": pkg / "a.py", "app.x.b": pkg / "b.py", "app.x.c": pkg / "c.py"}
    edges = {name: set(imports_of(name, path, known)) for name, path in known.items()}
    assert edges["app.x.a"] == {"app.x.b", "app.x.c"}
    assert cycles(edges) == {("app.x.a", "app.x.b")}
