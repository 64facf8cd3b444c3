"""Structured logs: one JSON object per line, ours and the libraries' alike.

structlog renders our events; the standard library's records (uvicorn, AutoGen,
SQLAlchemy) go through the same renderer, so every line parses as JSON. The
request id (bound by middleware) and run ids ride along as fields. A record
whose traceback is an error the server expects (a cancel, and the errors the
caller names, such as the engine's failed model call) is dropped. A credential in a record (an
``access_token`` query parameter, an ``Authorization`` header line, as the ``websockets`` library logs
a handshake at DEBUG) is redacted before anything renders it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

import structlog

_NOISY = ("autogen_core", "autogen_agentchat", "autogen_core.events", "httpx", "openai")


class _DropExpectedErrors(logging.Filter):
    """AutoGen logs a cancelled or failed agent call as an error with a traceback.

    A cancel is expected, and a failed model call is reported by the run itself
    (``run_failed`` with its code), so neither is an error of the server.
    """

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected: tuple[type[BaseException], ...] = (asyncio.CancelledError, *expected)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, self.expected)


_CREDENTIAL = re.compile(r"(access_token=)[^&\s\"']+|((?:proxy-)?authorization|x-api-key)(\s*:\s*).+", re.IGNORECASE)


_HANDSHAKE_LOGGERS = frozenset({"uvicorn.error"})


def _redacted(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)}[redacted]"
    return f"{match.group(2)}{match.group(3)}[redacted]"


class _RedactCredentials(logging.Filter):
    """A key must never reach a log line, whichever library logs it (uvicorn hands its error logger to
    the ``websockets`` library, which logs a handshake's request line and headers there at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in _HANDSHAKE_LOGGERS or record.name.startswith("websockets"):
            message = record.getMessage()
            cleaned = _CREDENTIAL.sub(_redacted, message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str, as_json: bool, *, expected: tuple[type[BaseException], ...] = ()) -> None:
    """Route every log line through one renderer. ``expected``: errors that a record's traceback may
    carry without being an error of the server (the composition passes the engine's failed model call)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(_DropExpectedErrors(expected))
    handler.addFilter(_RedactCredentials())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # AutoGen logs every event at INFO; keep only its warnings
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
