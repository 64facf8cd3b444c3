"""The per-token path, from a model client's chunk to a ``message.delta``, and the link from a
message to the deltas it was streamed as.

An agent's model client (``GuardedModelClient``) streams each call from the provider and puts every
chunk into its agent's *sink* (``sink_for``), around AutoGen's runtime, which would route each chunk
as a message (~250 us of CPU apiece). The sink publishes the chunk at once when nothing the team put
out before it is still on its way through the consumer loop (its ``TeamOutbox`` is idle), and
otherwise queues it on the team's own output queue, where the loop meets it in order (``chunk``).
With ``SWARM_FAST_TOKENS=false`` the chunks are AutoGen's own and only ``chunk`` sees them.

A message takes the id its deltas carried, found by ids, never by comparing text (``claim``):

- on the fast path the call's id rides on the result's usage (``tag_stream``), which
  AutoGen hands on, as the same object, to the message it makes of the result (and to the tool-call
  request of a call that asked for tools);
- AutoGen's own chunks carry the id of the message they become, except after a thought (R1-style
  reasoning, or text said before tool calls): AutoGen gives the thought the chunks' id and the
  message that follows a new one, so a message also takes its thought's id.

A ``Reasoning`` chunk is a ``reasoning.delta`` of the same message id, kept to be the message's
``reasoning``, and is not part of its text.
"""

from __future__ import annotations

from typing import Any

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, ModelClientStreamingChunkEvent

from app.core.envelope import DELTA, REASONING_DELTA
from app.engine.calls import TextSink, stream_of
from app.engine.chunks import Reasoning
from app.runtime.outbox import QueuedReasoning, TeamOutbox
from app.runtime.run.journal import Journal
from app.runtime.run.state import Stop


class TokenStreams:
    """A run's streamed calls: per stream id, the reasoning it streamed, until a message claims it."""

    __slots__ = ("_journal", "_own_chunks", "_stop", "_streams")

    def __init__(self, journal: Journal, stop: Stop, *, fast_tokens: bool) -> None:
        self._journal = journal
        self._stop = stop
        self._own_chunks = not fast_tokens  # the chunks on the output queue are AutoGen's own
        self._streams: dict[str, list[str]] = {}

    def sink_for(self, agent: str, outbox: TeamOutbox) -> TextSink:
        """Where an agent's model client puts each streamed chunk (see the module's docstring)."""
        streams, stop, stream = self._streams, self._stop, self._journal.stream
        shown, tags = agent in outbox.shown, outbox.tags
        last = ""

        def sink(message_id: str, text: str) -> None:
            nonlocal last
            if message_id != last:
                last = message_id
                streams.setdefault(message_id, [])
            if type(text) is Reasoning:
                text = str(text)
                streams[message_id].append(text)
                if outbox.idle and stop.reason is None:
                    if shown:
                        stream(REASONING_DELTA, {"message_id": message_id, "agent": agent, "text": text, **tags})
                else:
                    outbox.put(QueuedReasoning(content=text, source=agent, full_message_id=message_id))
                return
            if outbox.idle and stop.reason is None:
                if shown:
                    stream(DELTA, {"message_id": message_id, "agent": agent, "text": text, **tags})
            else:
                outbox.put(ModelClientStreamingChunkEvent(content=text, source=agent, full_message_id=message_id))

        return sink

    def chunk(self, item: ModelClientStreamingChunkEvent, tags: dict[str, Any] | None, agents: frozenset[str]) -> None:
        """A streamed chunk met on the team's output queue: a chunk of the fast path that waited its
        turn, or one of AutoGen's own streaming; a selector's is not shown."""
        agent = item.source
        if agent not in agents:
            return
        type_ = DELTA
        if type(item) is QueuedReasoning:
            type_ = REASONING_DELTA
        elif self._own_chunks and item.full_message_id is not None:
            self._streams.setdefault(item.full_message_id, [])
        data = {"message_id": item.full_message_id, "agent": agent, "text": item.content}
        if tags:
            data.update(tags)
        self._journal.stream(type_, data)

    def claim(self, *items: BaseChatMessage | BaseAgentEvent | None) -> tuple[str, str] | None:
        """The stream the first of ``items`` came from (by its usage's stream id, else its own id):
        that stream's id and the reasoning it streamed, taken off the open streams."""
        for item in items:
            if item is None:
                continue
            for key in (stream_of(item.models_usage), item.id):
                if key is not None and key in self._streams:
                    return key, "".join(self._streams.pop(key))
        return None

    def forget(self, item: BaseAgentEvent) -> None:
        """A call that became no message (tool calls only): its stream, if any, is closed."""
        key = stream_of(item.models_usage)
        if key is not None:
            self._streams.pop(key, None)
