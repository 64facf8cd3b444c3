"""Refuses component JSON that must never load: code, and any class off the allowlist.

This pass reads the whole JSON tree before anything interprets it, so a
``FunctionTool`` (whose ``source_code`` AutoGen executes on load), a code
executor or a foreign class is refused wherever it sits, even in a field
the import would otherwise ignore. Nothing here imports, evaluates or
instantiates anything: the JSON is only looked at.
"""

from __future__ import annotations

from typing import Any

from app.teams.components import allowed_provider
from app.teams.service import Loc, SpecErrors

# config keys that exist to carry Python: FunctionTool's source and the imports it runs first
CODE_KEYS = ("source_code", "global_imports")
# class names whose components run code (tools from source, code executors and their agents and tools)
CODE_PROVIDER_MARKERS = ("FunctionTool", "CodeExecutor", "CodeExecution")
MAX_DEPTH = 64  # path segments: a team, its agents and a chain of Or conditions fit easily
MAX_ERRORS = 20


def guard_component(component: Any, loc: Loc) -> None:
    """Raise ``InvalidSpec`` if ``component`` carries code or names a provider off the allowlist."""
    errors = SpecErrors()
    # depth first, in document order; iterative, so no nesting can exhaust the interpreter's stack
    stack: list[tuple[Any, Loc]] = [(component, loc)]
    while stack and len(errors.errors) < MAX_ERRORS:
        node, where = stack.pop()
        if len(where) - len(loc) > MAX_DEPTH:
            errors.add(where, f"Components nest too deeply (more than {MAX_DEPTH} levels).", "component_invalid")
            continue
        children: list[tuple[Any, Loc]] = []
        if isinstance(node, dict):
            if _refused(node, where, errors):
                continue  # refused as a whole: what it holds is never read
            children = [(value, [*where, key]) for key, value in node.items()]
        elif isinstance(node, list):
            children = [(value, [*where, i]) for i, value in enumerate(node)]
        stack.extend(reversed(children))
    errors.raise_if_any()


def _refused(node: dict[str, Any], where: Loc, errors: SpecErrors) -> bool:
    provider = node.get("provider")
    if isinstance(provider, str) and allowed_provider(provider) is None:
        shown = provider if len(provider) <= 200 else provider[:200] + "..."
        if any(marker in provider for marker in CODE_PROVIDER_MARKERS):
            errors.add(
                [*where, "provider"],
                f"'{shown}' runs code; SwarmDirector never loads code from a request. "
                "Name tools from the server's registry instead.",
                "component_code_refused",
            )
        else:
            errors.add(
                [*where, "provider"],
                f"'{shown}' is not a component SwarmDirector accepts; see docs/interop.md for the allowlist.",
                "component_provider_refused",
            )
        return True
    found = False
    for key in CODE_KEYS:
        if key in node:
            errors.add(
                [*where, key],
                f"A component carrying `{key}` is refused: SwarmDirector never loads code from a request.",
                "component_code_refused",
            )
            found = True
    return found
