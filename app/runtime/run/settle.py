"""The end of a run: its terminal event, written with the run's end and its conversation's state in
one transaction, unless another process settled the run first (its lease lapsed)."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import structlog
from sqlalchemy import Connection

from app.conversations.repository import end_run
from app.core.envelope import Envelope, usage_data
from app.core.vocabulary import TERMINAL_EVENT, EventType
from app.engine.factory import team_signature
from app.runs.repository import drop_parked, settle_run
from app.runtime.recorder import StorageError, Superseded
from app.runtime.run.consumer import RunParts
from app.runtime.run.outcome import Outcome

log = structlog.get_logger(__name__)


def terminal_data(parts: RunParts, outcome: Outcome, duration_ms: int) -> tuple[EventType, dict[str, Any]]:
    """The terminal event's type and data."""
    ledger = parts.ledger
    usage = usage_data(ledger.prompt_tokens, ledger.completion_tokens, ledger.estimated, ledger.by_model)
    data: dict[str, Any] = {"status": outcome.status, "usage": usage, "duration_ms": duration_ms}
    type_ = TERMINAL_EVENT[outcome.status]
    if outcome.status == "succeeded":
        data["stop_reason"] = outcome.stop_reason
        data["result"] = parts.messages.result
    elif outcome.status == "cancelled":
        data["reason"] = outcome.stop_reason or "cancelled"
    else:
        data["error"] = {"code": outcome.error_code, "message": outcome.error_message}
    return type_, data


def _settle(parts: RunParts, outcome: Outcome, conn: Connection, env: Envelope) -> None:
    state, ledger = parts.state, parts.ledger
    finished = env.at
    settled = settle_run(
        conn,
        state.run_id,
        status=outcome.status,
        finished_at=finished,
        stop_reason=outcome.stop_reason if outcome.status != "failed" else None,
        error_code=outcome.error_code,
        error_message=outcome.error_message,
        prompt_tokens=ledger.prompt_tokens,
        completion_tokens=ledger.completion_tokens,
        usage_estimated=ledger.estimated,
        message_count=parts.messages.count,
        last_seq=env.seq,
        result=parts.messages.result,
        lease_expires_at=None,
    )
    if not settled:
        # another process settled it first (our lease lapsed): its end stands, ours is dropped
        raise Superseded(f"run {state.run_id} was settled elsewhere")
    drop_parked(conn, state.run_id)
    # a team that did not finish cleanly is not trusted to continue from: the next run rebuilds its
    # context from the stored messages instead
    end_run(
        conn,
        state.conversation_id,
        state.run_id,
        state=outcome.state,
        signature=team_signature(state.spec) if outcome.state is not None else None,
        at=finished,
    )


async def settle(parts: RunParts, outcome: Outcome, started_at: float | None) -> None:
    """Write and publish the run's terminal event (published even when it cannot be stored)."""
    duration_ms = int((time.monotonic() - started_at) * 1000) if started_at else 0
    type_, data = terminal_data(parts, outcome, duration_ms)
    env = parts.journal.envelope(type_, data)
    try:
        await parts.journal.commit(env, partial(_settle, parts, outcome, env=env))
    except StorageError:
        log.error("run_settle_failed", run_id=parts.state.run_id)
    parts.deps.metrics.runs_finished.labels(status=outcome.status).inc()
    log.info(
        "run_finished",
        run_id=parts.state.run_id,
        status=outcome.status,
        error_code=outcome.error_code,
        duration_ms=duration_ms,
        messages=parts.messages.count,
    )
