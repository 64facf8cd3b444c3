"""AutoGen's message-handler discovery, done once per class instead of once per agent.

Every ``RoutedAgent`` (a team's group chat manager and each participant's
container) finds its handlers when it is made, and again when the runtime
registers it, by walking ``dir()`` of its class and reading every attribute.
What it finds depends only on the class, yet a run of a two-agent team pays
for it about ten times: ~0.4 ms of CPU per run on a two-core machine, out of
the ~15 ms a new run costs (``docs/performance.md``, section 15).

``cache_handler_discovery`` makes both lookups (``_discover_handlers`` and
``_handles_types``, private class methods of autogen-core, which is pinned)
remember their answer per class. Handlers are attached with decorators when a
class is defined, before any instance exists, so the first answer stays true.
``tests/engine/test_handlers.py`` holds the cached answers to AutoGen's own.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from autogen_core import RoutedAgent

_ORIGINAL_DISCOVER = RoutedAgent.__dict__["_discover_handlers"].__func__
_ORIGINAL_HANDLES = RoutedAgent.__dict__["_handles_types"].__func__


def _per_class(compute: Callable[[type], Any]) -> classmethod[Any, Any, Any]:
    answers: weakref.WeakKeyDictionary[type, Any] = weakref.WeakKeyDictionary()

    def cached(cls: type) -> Any:
        answer = answers.get(cls)
        if answer is None:
            answer = answers[cls] = compute(cls)
        return list(answer)  # a fresh list, as AutoGen's own returns

    cached.__wrapped__ = compute  # type: ignore[attr-defined]
    return classmethod(cached)


def cache_handler_discovery() -> None:
    """Install the per-class caches (idempotent)."""
    if getattr(RoutedAgent.__dict__["_discover_handlers"].__func__, "__wrapped__", None) is None:
        RoutedAgent._discover_handlers = _per_class(_ORIGINAL_DISCOVER)  # type: ignore[method-assign,assignment]
        RoutedAgent._handles_types = _per_class(_ORIGINAL_HANDLES)  # type: ignore[method-assign,assignment]
