"""The layers of ``app/`` point down: no import runs back up the stack, and no import cycle.

The stack, bottom to top (``docs/architecture.md`` draws it): ``app/patches`` (every touch of
another library's internals), ``app/core`` (plumbing, the event envelope and vocabulary),
``app/engine`` (the AutoGen boundary), the domains' data (models, repositories, schemas),
``app/runtime`` (runs as tasks), the application (``app/api``, the domain services), the surfaces
(routers, ``app/ws``, protocol views), the composition (``app/main``) and the commands
(``app/cli``). A module imports from its own layer and those below, never from one above; the fake
model's types stay out of public schemas; and no modules import each other, directly or round a
circle. Imports made inside functions and under ``TYPE_CHECKING`` count: they are read from the
source with ``ast``, nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# the stack, bottom first; a module's layer is the first rule that claims it
LAYERS = ("patches", "core", "engine", "data", "runtime", "application", "surface", "composition", "commands")
# the domains' modules that serve requests (above the runtime), by name; ``component_*``: Studio components
APPLICATION = ("service", "limits", "middleware", "seed", "sse")


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
    """The layer of an ``app`` module (see ``LAYERS``)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    leaf = parts[2] if len(parts) > 2 else ""
    if top in ("patches", "core", "engine", "runtime"):
        return top
    if top in ("cli", "dev"):
        return "commands"
    if top in ("main", "server", "schema"):
        return "composition"
    if top in ("ws", "protocols") or leaf == "router":
        return "surface"
    if top == "api" or leaf in APPLICATION or leaf.startswith("component"):
        return "application"
    return "data"


def rank(module: str) -> int:
    return LAYERS.index(layer(module))


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


def test_no_import_runs_back_up_a_layer() -> None:
    up = sorted(
        f"{a} ({layer(a)}) imports {b} ({layer(b)})"
        for a, targets in graph().items()
        for b in targets
        if rank(a) < rank(b)
    )
    assert not up, "imports that run up the layers:\n" + "\n".join(up)


def test_every_module_has_a_layer_and_the_stack_is_whole() -> None:
    assert {layer(m) for m in modules()} == set(LAYERS)
    assert layer("app.core.db") == "core" and layer("app.runs.repository") == "data"
    assert layer("app.runs.service") == "application" and layer("app.runs.router") == "surface"


def test_the_fake_model_stays_out_of_public_schemas() -> None:
    leaks = sorted(a for a, targets in graph().items() if a.endswith("schemas") and "app.engine.fake" in targets)
    assert not leaks, f"public schemas that import the fake model: {leaks}"


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, f"import cycles: {sorted(found)}"


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


def test_app_patches_imports_no_app_module() -> None:
    edges = graph()
    up = {(a, b) for a, targets in edges.items() if layer(a) == "patches" for b in targets if layer(b) != "patches"}
    assert not up, f"app/patches is the bottom layer: it imports no other app module: {sorted(up)}"
