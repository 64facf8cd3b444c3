"""Runs and their event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, utcnow


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_principal_id_id", "principal_id", "id"),
        Index("ix_runs_conversation_status", "conversation_id", "status"),
        Index("ix_runs_principal_created", "principal_id", "created_at"),
        Index("ix_runs_status_lease", "status", "lease_expires_at"),
        # one run per (principal, Idempotency-Key): the index decides between concurrent first requests
        Index("ix_runs_principal_idempotency_key", "principal_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    team_id: Mapped[str | None] = mapped_column(String(40), default=None)
    team_name: Mapped[str] = mapped_column(String(64))
    # the fully resolved team spec the run executes, frozen at creation
    team_spec: Mapped[dict[str, Any]]
    task: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    if_busy: Mapped[str] = mapped_column(String(20), default="reject")
    timeout_s: Mapped[float] = mapped_column(Float)
    input_timeout_s: Mapped[float] = mapped_column(Float, default=300.0, server_default="300")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # some of the run's model calls reported no usage: their counts were estimated (app/engine/estimate.py)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # distributed mode: who executes the run, until when (renewed by heartbeats), how often it was tried
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # a cancel asked for on any replica, for the executor to act on even if the signal was missed
    cancel_requested: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # the request's Idempotency-Key and the SHA-256 of its body; a repeat within the window gets this run
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), default=None)

    @classmethod
    def queued(
        cls,
        *,
        id: str,
        principal_id: str,
        conversation_id: str,
        team_id: str | None,
        team_name: str,
        team_spec: dict[str, Any],
        task: str,
        if_busy: str,
        timeout_s: float,
        input_timeout_s: float,
        meta: dict[str, Any],
        max_attempts: int,
        at: datetime,
        idempotency_key: str | None = None,
        idempotency_hash: str | None = None,
    ) -> Run:
        """A new run, queued, with every column given (``new_row`` writes it without the unit of work)."""
        return cls(
            id=id,
            principal_id=principal_id,
            conversation_id=conversation_id,
            team_id=team_id,
            team_name=team_name,
            team_spec=team_spec,
            task=task,
            status="queued",
            if_busy=if_busy,
            timeout_s=timeout_s,
            input_timeout_s=input_timeout_s,
            meta=meta,
            stop_reason=None,
            error_code=None,
            error_message=None,
            prompt_tokens=0,
            completion_tokens=0,
            usage_estimated=False,
            message_count=0,
            last_seq=0,
            result=None,
            worker_id=None,
            lease_expires_at=None,
            attempts=0,
            max_attempts=max_attempts,
            cancel_requested=None,
            created_at=at,
            started_at=None,
            finished_at=None,
            idempotency_key=idempotency_key,
            idempotency_hash=idempotency_hash,
        )


class ParkedRun(Base):
    """A run that waits for a person with no process holding it: the request it waits on, its team's
    saved state and what the run had used, until the answer resumes it (on any process) or a cancel or
    the input's deadline settles it. A row exists from the park's commit (with ``input.requested``) to
    the resume's (with ``input.received``)."""

    __tablename__ = "parked_runs"
    __table_args__ = (
        Index("ix_parked_runs_deadline", "deadline"),
        Index("ix_parked_runs_principal", "principal_id"),
    )

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(String(40))
    request_id: Mapped[str] = mapped_column(String(100))
    # input: a user proxy's turn; handoff: a swarm handed off to the user; approval: a tool's call
    kind: Mapped[str] = mapped_column(String(20))
    agent: Mapped[str] = mapped_column(String(64))  # who asks (for a hand-off: the agent that handed off)
    prompt: Mapped[str] = mapped_column(Text)
    # the team's save_state(); a run parked on a tool's approval: its checkpoint's, the state before the
    # turn that called the tool (none when that was the run's first turn: it resumes from its task)
    state: Mapped[dict[str, Any] | None]
    carry: Mapped[dict[str, Any]]  # what the run had used and stored (app/runtime/parking.py: Carried)
    parked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    answer: Mapped[str | None] = mapped_column(Text, default=None)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class RunCheckpoint(Base):
    """A run's team state after its last whole turn, for a run that may be resumed after a crash (it
    asked for ``retries``): written with that turn's message, in one transaction, and gone with the run's
    end. ``seq``: the turn's last event; ``carry``: what the run had used and stored by then (as a parked
    run's, ``app/runtime/parking.py``: ``Carried``)."""

    __tablename__ = "run_checkpoints"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]]
    carry: Mapped[dict[str, Any]]
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class RunEvent(Base):
    __tablename__ = "run_events"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    # set on a row holding consecutive deltas of one message, ``seq`` to ``seq_end`` (see RunEventRepository)
    seq_end: Mapped[int | None] = mapped_column(Integer, default=None)
    type: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any]]


class ModelCallRecord(Base):
    """One call to a model (answered or failed): what analytics' latency and token figures come from."""

    __tablename__ = "model_calls"
    __table_args__ = (Index("ix_model_calls_principal_started", "principal_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    principal_id: Mapped[str] = mapped_column(String(64))
    team_name: Mapped[str] = mapped_column(String(64))
    agent: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
