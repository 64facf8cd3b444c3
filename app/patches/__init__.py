"""Every patch of another library's private internals, installed once at process start.

``install()`` is called by each entry point (the app factory, the CLI, the benchmarks), never as an
import side effect. (Issue 21: this package gathers the patches; see each module's docstring.)
"""

from __future__ import annotations

_installed = False


def install() -> None:
    """Install every patch (idempotent)."""
    global _installed
    if _installed:
        return
    from app.engine.handlers import cache_handler_discovery
    from app.engine.untraced import skip_unread_telemetry

    cache_handler_discovery()
    skip_unread_telemetry()
    _installed = True
