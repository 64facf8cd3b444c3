"""Prometheus metrics, on a registry of this app's own (tests run several apps in one process).

Counters on the token path are pre-bound children, so a delta costs one
increment and no label lookup. A model call is observed through what it reports
(``ObservedCall``), so the metrics know nothing of the engine that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class ObservedCall(Protocol):
    """A finished model call, as the metrics read it (``app.engine.calls.ModelCall`` is one)."""

    @property
    def agent(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_live = Gauge("swarm_runs_live", "Runs queued or going in this process.", registry=r)
        self.watchers_live = Gauge("swarm_watchers_live", "Live stream subscriptions (SSE and WebSocket).", registry=r)
        self.runs_finished = Counter("swarm_runs_finished", "Runs that ended, by final status.", ["status"], registry=r)
        self.events = Counter("swarm_events_published", "Run events published to watchers.", ["type"], registry=r)
        self.model_calls = Histogram(
            "swarm_model_call_seconds",
            "Duration of model calls, retries included.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_failures = Counter(
            "swarm_model_call_failures", "Model calls that failed for good, by code.", ["code"], registry=r
        )
        self.tokens = Counter("swarm_tokens", "Model tokens by agent and kind.", ["agent", "kind"], registry=r)
        self.deltas = self.events.labels(type="message.delta")

    def bind_live(self, runs: Callable[[], float], watchers: Callable[[], float]) -> None:
        self.runs_live.set_function(runs)
        self.watchers_live.set_function(watchers)

    def observe_call(self, call: ObservedCall) -> None:
        self.model_calls.labels(model=call.model).observe(call.duration_ms / 1000)
        if call.error_code is not None and call.error_code != "cancelled":
            self.model_failures.labels(code=call.error_code).inc()
        if call.prompt_tokens:
            self.tokens.labels(agent=call.agent, kind="prompt").inc(call.prompt_tokens)
        if call.completion_tokens:
            self.tokens.labels(agent=call.agent, kind="completion").inc(call.completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
