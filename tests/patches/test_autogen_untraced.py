"""AutoGen's runtime skips its tracing and event-log work only when nobody receives it
(app/patches/autogen_untraced.py)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import EVENT_LOGGER_NAME, SingleThreadedAgentRuntime
from autogen_core._serialization import SerializationRegistry
from autogen_core.logging import MessageEvent
from autogen_ext.models.replay import ReplayChatCompletionClient
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, NoOpTracer

from app.patches import autogen_untraced as untraced


class Counted:
    """Counts the calls of one of AutoGen's originals the skips fall back to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        original = getattr(untraced, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(untraced, name, counted)


@pytest.fixture
def originals(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counted]:
    return {
        name: Counted(monkeypatch, name)
        for name in ("_ORIGINAL_TRACE_BLOCK", "_ORIGINAL_ATTRIBUTES", "_ORIGINAL_SERIALIZE")
    }


def team(runtime: SingleThreadedAgentRuntime | None = None) -> RoundRobinGroupChat:
    agents = [
        AssistantAgent(name, model_client=ReplayChatCompletionClient([f"{name} says {n}" for n in range(3)]))
        for name in ("ann", "bob")
    ]
    return RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(4), runtime=runtime)


async def transcript(runtime: SingleThreadedAgentRuntime | None = None) -> list[tuple[str, str]]:
    result = await team(runtime).run(task="go")
    return [(m.source, m.to_text()) for m in result.messages]


EXPECTED = [("user", "go"), ("ann", "ann says 0"), ("bob", "bob says 0"), ("ann", "ann says 1")]


@contextlib.contextmanager
def event_log(level: int) -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger(EVENT_LOGGER_NAME)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


async def test_untraced_and_unlogged_nothing_is_serialised_or_traced(
    monkeypatch: pytest.MonkeyPatch, originals: dict[str, Counted]
) -> None:
    monkeypatch.setenv("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")  # as every entry point of ours sets it
    work: list[str] = []
    for owner, name in ((SerializationRegistry, "serialize"), (NoOpTracer, "start_as_current_span")):
        real = getattr(owner, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            # the runtime's spans ("autogen send ..."); AutoGen's GenAI spans go to the global provider, untouched
            if _name == "serialize" or str(args[1]).startswith("autogen "):
                work.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    with event_log(logging.WARNING) as records:
        assert await transcript() == EXPECTED
    assert records == [] and work == []  # AutoGen alone serialises and opens a no-op span per message
    assert {name: c.calls for name, c in originals.items()} == {
        "_ORIGINAL_TRACE_BLOCK": 0,
        "_ORIGINAL_ATTRIBUTES": 0,
        "_ORIGINAL_SERIALIZE": 0,
    }


async def test_with_the_event_log_on_its_payloads_are_autogens(
    monkeypatch: pytest.MonkeyPatch, originals: dict[str, Counted]
) -> None:
    monkeypatch.setenv("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")
    with event_log(logging.INFO) as records:
        assert await transcript() == EXPECTED
    payloads = [r.msg.kwargs["payload"] for r in records if isinstance(r.msg, MessageEvent)]
    assert payloads and originals["_ORIGINAL_SERIALIZE"].calls >= len(payloads)
    assert "" not in payloads
    # AutoGen's serialisation of the team's messages: the replies are in them
    assert any("ann says 0" in json.dumps(json.loads(p)) for p in payloads if p.startswith("{"))
    assert originals["_ORIGINAL_TRACE_BLOCK"].calls == 0  # still untraced


class RecordingTracer(trace.Tracer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, dict[str, Any]]] = []

    def start_span(self, name: str, *args: Any, attributes: Any = None, **kwargs: Any) -> trace.Span:
        self.spans.append((name, dict(attributes or {})))
        return INVALID_SPAN

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Any = None, kind: Any = None, attributes: Any = None, *args: Any, **kwargs: Any
    ) -> Iterator[trace.Span]:
        self.spans.append((name, dict(attributes or {})))
        yield INVALID_SPAN


class RecordingProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.tracer = RecordingTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self.tracer


async def test_with_a_tracer_every_span_and_its_message_are_autogens(
    monkeypatch: pytest.MonkeyPatch, originals: dict[str, Counted]
) -> None:
    monkeypatch.delenv("AUTOGEN_DISABLE_RUNTIME_TRACING", raising=False)
    provider = RecordingProvider()
    runtime = SingleThreadedAgentRuntime(tracer_provider=provider, ignore_unhandled_exceptions=False)
    runtime.start()
    try:
        with event_log(logging.WARNING):
            assert await transcript(runtime) == EXPECTED
    finally:
        await runtime.stop_when_idle()
    spans = provider.tracer.spans
    assert len(spans) == originals["_ORIGINAL_TRACE_BLOCK"].calls > 10
    assert {name.split(" ")[1] for name, _ in spans} >= {"create", "publish", "send", "process"}
    # the delivered messages' attributes carry AutoGen's serialisation of them
    messages = [attrs["message"] for _, attrs in spans if "message" in attrs]
    assert "" not in messages and any("ann says 0" in m for m in messages)
    assert originals["_ORIGINAL_ATTRIBUTES"].calls > 0 and originals["_ORIGINAL_SERIALIZE"].calls > 0
