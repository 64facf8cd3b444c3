"""A run's messages: each stored with its ``message.completed``, at the conversation's next position.

A message keeps the id its deltas carried (``TokenStreams.claim``). A thought (AutoGen's
``ThoughtEvent``) waits, per agent, for what follows it: followed by tool calls it is what the model
said first, a message of its own (type ``ThoughtEvent``); followed by the agent's message, it is the
reasoning that led to it (its ``reasoning``), unless the call streamed its reasoning itself.
"""

from __future__ import annotations

from typing import Any

from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, TextMessage, ThoughtEvent, ToolCallRequestEvent

from app.conversations.repository import message_stored
from app.core.envelope import Envelope
from app.core.repository import Execution
from app.engine.events import CompletedMessage, completed_message, handoff_data, message_completed_data
from app.runtime.recorder import Rows
from app.runtime.run.journal import Journal
from app.runtime.run.state import RunState
from app.runtime.run.tokens import TokenStreams


class MessageLog:
    __slots__ = ("_journal", "_state", "_thoughts", "_tokens", "base_position", "count", "defer", "held", "result")

    def __init__(self, state: RunState, journal: Journal, tokens: TokenStreams) -> None:
        self._state = state
        self._journal = journal
        self._tokens = tokens
        self.base_position = 0  # the conversation's messages before this run
        self.count = 0  # this run's messages so far
        self.result: dict[str, Any] | None = None  # the last agent message: the run's answer
        self._thoughts: dict[str, ThoughtEvent] = {}
        # step mode: a turn's message waits for the turn's end, to be stored with the team's checkpoint
        self.defer = False
        self.held: tuple[Envelope, Rows, Envelope | None] | None = None

    def hold_thought(self, thought: ThoughtEvent) -> None:
        self._thoughts[thought.source] = thought  # what it is shows with the agent's next item

    async def before_tool_calls(self, request: ToolCallRequestEvent, tags: dict[str, Any] | None) -> None:
        """An agent asks for tools: the text its model said first (a held thought) is a message."""
        thought = self._thoughts.pop(request.source, None)
        if thought is not None:
            env, rows = self.numbered(thought, tags, carrier=request)
            await self._journal.commit(env, rows)
        else:
            self._tokens.forget(request)  # the call streamed no text (perhaps reasoning): nothing claims it

    def drop_thought(self, source: str) -> None:
        """A held thought that is stored already (a resumed turn's, given again): not stored twice."""
        self._thoughts.pop(source, None)

    async def store(self, message: BaseChatMessage, tags: dict[str, Any] | None = None) -> None:
        """Store a chat message (and announce a hand-off after it); in step mode, hold both (``flush``)."""
        thought = self._thoughts.pop(message.source, None)
        env, rows = self.numbered(message, tags, thought=thought)
        handoff = None
        if isinstance(message, HandoffMessage):
            handoff = self._journal.envelope("handoff", {**handoff_data(message), **(tags or {})})
        if self.defer:
            self.held = (env, rows, handoff)
            return
        await self._journal.commit(env, rows, then=handoff)

    async def flush(self, checkpoint: tuple[Execution, ...] = ()) -> None:
        """Store the held message (with ``checkpoint``, the team's state after its turn, when given)."""
        held, self.held = self.held, None
        if held is None:
            if checkpoint:
                self._journal.write(Rows(checkpoint))
            return
        env, rows, handoff = held
        await self._journal.commit(env, Rows((*rows.executions, *checkpoint)), then=handoff)

    def numbered(
        self,
        message: BaseChatMessage | ThoughtEvent,
        tags: dict[str, Any] | None = None,
        *,
        thought: ThoughtEvent | None = None,
        carrier: ToolCallRequestEvent | None = None,
    ) -> tuple[Envelope, Rows]:
        """A message's ``message.completed``, numbered, and the rows that store it; it counts as the
        run's next message from here on. ``thought``: the one that came right before it;
        ``carrier``: the tool-call request a thought came with (its usage names the call's stream)."""
        m = completed_message(message)
        reasoning = thought.content if thought is not None else None
        # only a text answer (or a thought) is what a call streamed; other messages keep their ids
        streamed = None
        if isinstance(message, TextMessage | ThoughtEvent):
            streamed = self._tokens.claim(carrier, message, thought)
        if streamed is not None:
            m.id, streamed_reasoning = streamed
            reasoning = streamed_reasoning or reasoning
        self.count += 1
        position = self.base_position + self.count
        if m.agent != "user" and isinstance(message, BaseChatMessage):
            self.result = {"message_id": m.id, "agent": m.agent, "text": m.text}
        data = message_completed_data(m, position)
        if reasoning:
            data["reasoning"] = reasoning
        if tags:
            data.update(tags)
        env = self._journal.envelope("message.completed", data)
        return env, self._rows(m, position, env)

    def _rows(self, m: CompletedMessage, position: int, env: Envelope) -> Rows:
        state = self._state
        return Rows(
            message_stored(
                {
                    "id": m.id,
                    "conversation_id": state.conversation_id,
                    "run_id": state.run_id,
                    "principal_id": state.principal_id,
                    "position": position,
                    "seq": env.seq,
                    "agent": m.agent,
                    "type": m.type,
                    "content": m.text,
                    "payload": m.payload,
                    "prompt_tokens": m.prompt_tokens,
                    "completion_tokens": m.completion_tokens,
                    "usage_estimated": m.usage_estimated,
                    "created_at": env.at,
                }
            )
        )
