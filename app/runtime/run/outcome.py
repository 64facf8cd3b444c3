"""How a run ended, and the one classifier of errors for the whole server.

Errors are classified by type, never by their text: a model call's own failure by the engine
(``app.engine.calls.error_code``: rate limits, timeouts, a provider's refusal, an error in its
stream), the database's by ``StorageError``. AutoGen wraps an agent's error in a ``RuntimeError``
that carries only a formatted traceback, so the run asks its model calls what went wrong
(``CallLedger.failure``) before it looks at the exception it was given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.secrets import scrub_credentials
from app.core.vocabulary import RunStatus
from app.engine.calls import ModelCall, error_code
from app.runtime.recorder import StorageError
from app.runtime.run.state import RunState


@dataclass(slots=True)
class Outcome:
    status: RunStatus  # a terminal one
    stop_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    state: dict[str, Any] | None = None


def classify(exc: BaseException) -> str:
    """The stable ``error.code`` of a failure, by the error's type."""
    if isinstance(exc, StorageError):
        return "storage_error"
    return error_code(exc)


def public_error_text(exc: BaseException) -> str:
    """The error text a client may see: the root cause's message, bounded, with credentials removed."""
    text = str(exc).strip() or type(exc).__name__
    if "Traceback" in text:
        # AutoGen wraps agent errors as a RuntimeError carrying a formatted traceback; keep its last line
        text = text.strip().splitlines()[-1]
    return scrub_credentials(text)[:500]


def failed(exc: BaseException, call: ModelCall | None, secrets: Iterable[str] = ()) -> Outcome:
    """A failure: the failed model call's own code and message when there was one, else the error's."""
    if call is not None and call.error_code is not None and call.error_code != "cancelled":
        message = scrub_credentials(call.error_message or call.error_code, secrets)
        return Outcome("failed", error_code=call.error_code, error_message=message)
    return Outcome("failed", error_code=classify(exc), error_message=public_error_text(exc))


def stopped(state: RunState, reason: str | None) -> Outcome:
    """The outcome of a run stopped through its token, by reason."""
    if reason == "timed_out":
        message = f"The run exceeded its time limit of {state.timeout_s:g} s."
        return Outcome("timed_out", error_code="timed_out", error_message=message)
    if reason == "input_timeout":
        message = f"No answer to the input request within {state.input_timeout_s:g} s."
        return Outcome("timed_out", error_code="input_timeout", error_message=message)
    return Outcome("cancelled", stop_reason=reason)
