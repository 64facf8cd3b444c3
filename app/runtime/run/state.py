"""What a run is (``RunState``, fixed when it starts) and how it is stopped (``Stop``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from app.engine.interrupts import RunToken
from app.runs.models import Run
from app.teams.schemas import ResolvedTeamSpec


@dataclass(frozen=True, slots=True)
class RunState:
    """A run's identity and limits, read once from its row."""

    run_id: str
    conversation_id: str
    principal_id: str
    task: str
    attempt: int
    max_attempts: int  # ``retries`` + 1 (and one more per park answered)
    started: bool  # an earlier attempt started it: this one resumes it (after a crash, or a park answered)
    timeout_s: float
    input_timeout_s: float
    spec: ResolvedTeamSpec
    agents: frozenset[str]  # the team's own agents: whose streamed chunks are shown
    new_conversation: bool  # the run's request created its conversation: no history, no saved state
    lease: tuple[str, int] | None  # claimed from the queue: (worker id, attempt), which fences its writes

    @classmethod
    def of(cls, run: Run, *, new_conversation: bool = False) -> RunState:
        spec = ResolvedTeamSpec.model_validate(run.team_spec)
        attempt = max(run.attempts or 0, 1)
        return cls(
            run_id=run.id,
            conversation_id=run.conversation_id,
            principal_id=run.principal_id,
            task=run.task,
            attempt=attempt,
            max_attempts=run.max_attempts or 1,
            started=run.started_at is not None,
            timeout_s=run.timeout_s,
            input_timeout_s=run.input_timeout_s,
            spec=spec,
            agents=frozenset(m.name for m in spec.members),
            new_conversation=new_conversation,
            lease=(run.worker_id, attempt) if run.worker_id else None,
        )


class Stop:
    """The one way a run stops: its ``CancellationToken`` (cancelling the consumer would not stop the
    team), pulled once, with the reason (``cancelled``, ``timed_out``, ``input_timeout``, ``shutdown``,
    or a client's own)."""

    __slots__ = ("_callbacks", "reason", "requested", "token")

    def __init__(self) -> None:
        self.token = RunToken()
        self.reason: str | None = None
        self.requested = asyncio.Event()
        self._callbacks: list[Callable[[], None]] = []

    def request(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        self.token.cancel()
        self.requested.set()
        for callback in self._callbacks:
            callback()

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
