"""AutoGen's runtime without the tracing and event-log work that nobody receives.

Written for autogen-core 0.7.5 (a monkey-patch of three private methods, applied by ``install()``;
``SWARM_PATCHES_OFF=autogen_untraced`` leaves it out, to measure it).

``SingleThreadedAgentRuntime`` wraps every message it sends, publishes and
delivers in an OpenTelemetry span (``TraceHelper.trace_block``), builds the
span's attributes (``_create_otel_attributes``, which serialises the message
to JSON), and passes a ``MessageEvent`` carrying the message serialised again
(``_try_serialize``) to its event logger. It does all of this eagerly. With
runtime tracing off (``AUTOGEN_DISABLE_RUNTIME_TRACING=true``, which every
entry point of ours sets: the tracer is OpenTelemetry's no-op one) and the
``autogen_core.events`` logger below INFO (as ``app/core/logging.py`` sets it),
the spans record nothing and the log records are never made, yet a one-token
run paid for about 44 spans and as many serialisations.

``skip_unread_telemetry`` makes the three skip their work in exactly that
case, decided per call:

- ``trace_block`` enters a ready no-op span (``INVALID_SPAN``, what the no-op
  tracer gives) when the runtime's tracer provider is the no-op one;
- ``_create_otel_attributes`` returns no attributes then (only those spans take them);
- ``_try_serialize`` returns ``""`` when, besides, the event logger would drop
  INFO records (only the spans' attributes and those records take its text).

With a real tracer provider, or the event logger at INFO, AutoGen's own code
runs as before; ``tests/patches/test_autogen_untraced.py`` holds both cases.

Measured off against on (docs/performance.md, section 21): a two-assistant
team's run of four messages costs AutoGen 3.2 ms of CPU with it and 4.8 ms
without (in one process, eight alternating blocks a side, every block lower
with it); through the server, a one-token run's CPU went from 16.8 to 17.7 ms
without it (W3, medians of 25 and 20 repeats: inside that day's noise).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from autogen_core import EVENT_LOGGER_NAME, SingleThreadedAgentRuntime
from autogen_core._telemetry._tracing import TraceHelper
from opentelemetry.trace import INVALID_SPAN, NoOpTracerProvider

_event_logger = logging.getLogger(EVENT_LOGGER_NAME)
_NO_SPAN = contextlib.nullcontext(INVALID_SPAN)  # reusable: it holds no state

_ORIGINAL_TRACE_BLOCK: Callable[..., Any] = TraceHelper.trace_block
_ORIGINAL_ATTRIBUTES: Callable[..., Any] = SingleThreadedAgentRuntime._create_otel_attributes
_ORIGINAL_SERIALIZE: Callable[..., Any] = SingleThreadedAgentRuntime._try_serialize


def _untraced(helper: TraceHelper[Any, Any, Any]) -> bool:
    return isinstance(helper.tracer_provider, NoOpTracerProvider)


def _trace_block(self: TraceHelper[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
    if _untraced(self):
        return _NO_SPAN
    return _ORIGINAL_TRACE_BLOCK(self, *args, **kwargs)


async def _create_otel_attributes(self: SingleThreadedAgentRuntime, *args: Any, **kwargs: Any) -> Any:
    if _untraced(self._tracer_helper):
        return {}
    return await _ORIGINAL_ATTRIBUTES(self, *args, **kwargs)


def _try_serialize(self: SingleThreadedAgentRuntime, message: Any) -> str:
    if _untraced(self._tracer_helper) and not _event_logger.isEnabledFor(logging.INFO):
        return ""
    result: str = _ORIGINAL_SERIALIZE(self, message)
    return result


def skip_unread_telemetry() -> None:
    """Install the three (idempotent)."""
    TraceHelper.trace_block = _trace_block  # type: ignore[assignment]
    SingleThreadedAgentRuntime._create_otel_attributes = _create_otel_attributes  # type: ignore[method-assign]
    SingleThreadedAgentRuntime._try_serialize = _try_serialize  # type: ignore[method-assign]
