"""Structured logs: one JSON object per line, with the request and run ids bound where known."""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog


def configure_logging(level: str, as_json: bool) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # AutoGen logs every event at INFO through the standard library; keep only its warnings
    for noisy in ("autogen_core", "autogen_agentchat", "autogen_core.events", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    runtime_logger = logging.getLogger("autogen_core")
    if not any(isinstance(f, _DropCancellation) for f in runtime_logger.filters):
        runtime_logger.addFilter(_DropCancellation())


class _DropCancellation(logging.Filter):
    """AutoGen's runtime logs a cancelled agent call as an error with a traceback; a cancel is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)
