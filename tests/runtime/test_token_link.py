"""A message takes the id its deltas carried, found by ids and never by comparing texts.

Driven through the run's real parts (its journal, token streams and message log) with the recorder
replaced by a list, so that the case a text comparison gets wrong is easy to state: a message whose
text is not what its call streamed (AutoGen strips an R1 model's ``<think>`` from the answer and
gives it a new id; a provider may stream text that the result trims).
"""

from __future__ import annotations

from typing import Any

from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage, ThoughtEvent, ToolCallRequestEvent
from autogen_core import FunctionCall
from autogen_core.models import RequestUsage

from app.core.envelope import Envelope
from app.core.metrics import Metrics
from app.engine.calls import tag_stream
from app.engine.chunks import Reasoning
from app.runtime.bus import EventBus
from app.runtime.outbox import TeamOutbox
from app.runtime.run.journal import Journal
from app.runtime.run.messages import MessageLog
from app.runtime.run.state import RunState, Stop
from app.runtime.run.tokens import TokenStreams
from app.teams.schemas import ResolvedTeamSpec


class Recorded:
    """The recorder's place: what the journal hands it, kept in order."""

    def __init__(self) -> None:
        self.events: list[Envelope] = []

    def record(self, env: Envelope) -> None:
        self.events.append(env)

    async def commit(self, env: Envelope, change: Any = None, *, then: Envelope | None = None) -> None:
        self.events += [env] if then is None else [env, then]


class IdleOutbox(TeamOutbox):
    """Nothing queued ahead: every chunk is a delta at once (the fast path's usual case)."""

    @property
    def idle(self) -> bool:
        return True


def parts(*, fast_tokens: bool) -> tuple[Recorded, TokenStreams, MessageLog]:
    spec = ResolvedTeamSpec.model_validate(
        {"name": "t", "kind": "single", "members": [{"name": "a", "model": "fake/t1"}]}
    )
    state = RunState("r1", "c1", "p1", "task", 1, 1, False, 60.0, 60.0, spec, frozenset({"a"}), True, None)
    recorded = Recorded()
    journal = Journal("r1", EventBus(16), recorded, Metrics())  # type: ignore[arg-type]
    tokens = TokenStreams(journal, Stop(), fast_tokens=fast_tokens)
    return recorded, tokens, MessageLog(state, journal, tokens)


def by_type(recorded: Recorded, type_: str) -> list[dict[str, Any]]:
    return [e.data for e in recorded.events if e.type == type_]


async def test_the_fast_path_links_by_the_calls_stream_id_even_when_the_text_differs() -> None:
    recorded, tokens, messages = parts(fast_tokens=True)
    sink = tokens.sink_for("a", IdleOutbox(frozenset({"a"})))
    for piece in (Reasoning("weighing it"), "<think>", "x", "</think>", "  The answer.  "):
        sink("call-1", piece)
    usage = RequestUsage(5, 7)
    tag_stream(usage, "call-1")
    # the message's text is not the streamed text, and AutoGen gave it an id of its own
    answer = TextMessage(content="The answer.", source="a", models_usage=usage)
    env, _rows = messages.numbered(answer)
    assert env.data["message_id"] == "call-1" != answer.id
    assert env.data["reasoning"] == "weighing it"
    assert {d["message_id"] for d in by_type(recorded, "message.delta")} == {"call-1"}
    assert messages.result == {"message_id": "call-1", "agent": "a", "text": "The answer."}


async def test_autogens_own_chunks_link_through_the_thought_that_took_their_id() -> None:
    recorded, tokens, messages = parts(fast_tokens=False)
    for piece in ("<think>hmm</think>", "Hello"):
        tokens.chunk(ModelClientStreamingChunkEvent(content=piece, source="a", full_message_id="m-1"), None, {"a"})
    # AutoGen's R1 handling: the thought keeps the chunks' id, the answer after it gets a new one
    thought = ThoughtEvent(content="hmm", source="a", id="m-1")
    messages.hold_thought(thought)
    await messages.store(TextMessage(content="Hello", source="a"))
    (completed,) = by_type(recorded, "message.completed")
    assert completed["message_id"] == "m-1" and completed["reasoning"] == "hmm"


async def test_a_thought_before_tool_calls_takes_the_id_of_the_call_that_streamed_it() -> None:
    recorded, tokens, messages = parts(fast_tokens=True)
    sink = tokens.sink_for("a", IdleOutbox(frozenset({"a"})))
    sink("call-2", "Let me compute.")
    usage = RequestUsage(3, 4)
    tag_stream(usage, "call-2")
    messages.hold_thought(ThoughtEvent(content="Let me compute.", source="a"))
    request = ToolCallRequestEvent(
        content=[FunctionCall(id="t1", name="calc", arguments="{}")], source="a", models_usage=usage
    )
    await messages.before_tool_calls(request, None)
    (completed,) = by_type(recorded, "message.completed")
    assert completed["message_id"] == "call-2" and completed["type"] == "ThoughtEvent"


async def test_a_message_from_no_stream_keeps_its_own_id_and_a_stream_is_claimed_once() -> None:
    _recorded, tokens, messages = parts(fast_tokens=True)
    sink = tokens.sink_for("a", IdleOutbox(frozenset({"a"})))
    sink("call-3", "one")
    usage = RequestUsage(1, 1)
    tag_stream(usage, "call-3")
    first = TextMessage(content="one", source="a", models_usage=usage)
    again = TextMessage(content="one", source="a", models_usage=usage)
    unstreamed = TextMessage(content="two", source="a")
    ids = [messages.numbered(m)[0].data["message_id"] for m in (first, again, unstreamed)]
    assert ids == ["call-3", again.id, unstreamed.id]
