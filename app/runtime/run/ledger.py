"""A run's model calls: what each cost (the run's usage is their sum), and the one that failed it."""

from __future__ import annotations

from app.core.metrics import Metrics
from app.engine.calls import ModelCall
from app.runs.repository import model_call
from app.runtime.recorder import Rows
from app.runtime.run.journal import Journal
from app.runtime.run.state import RunState


class CallLedger:
    """Every model call of the run (every agent's, the selector's, tool-calling ones), as billed."""

    __slots__ = (
        "_journal",
        "_metrics",
        "_state",
        "by_model",
        "completion_tokens",
        "estimated",
        "failure",
        "prompt_tokens",
    )

    def __init__(self, state: RunState, journal: Journal, metrics: Metrics) -> None:
        self._state = state
        self._journal = journal
        self._metrics = metrics
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated = False  # some call's usage was counted here: the provider reported none
        self.by_model: dict[str, tuple[int, int]] = {}  # prompt and completion tokens per model
        # the last call that failed (not cancelled): AutoGen wraps its error, this says what it was
        self.failure: ModelCall | None = None

    def observe(self, call: ModelCall) -> None:
        self._metrics.observe_call(call)
        if call.error_code is not None and call.error_code != "cancelled":
            self.failure = call
        self.prompt_tokens += call.prompt_tokens
        self.completion_tokens += call.completion_tokens
        prompt, completion = self.by_model.get(call.model, (0, 0))
        self.by_model[call.model] = (prompt + call.prompt_tokens, completion + call.completion_tokens)
        self.estimated = self.estimated or call.usage_estimated
        state = self._state
        record = dict(
            run_id=state.run_id,
            principal_id=state.principal_id,
            team_name=state.spec.name,
            agent=call.agent,
            model=call.model,
            started_at=call.started_at,
            duration_ms=call.duration_ms,
            ttft_ms=call.ttft_ms,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            attempts=call.attempts,
            error_code=call.error_code,
            usage_estimated=call.usage_estimated,
        )
        self._journal.write(Rows((model_call(record),)))
