"""The consumer loop's one dispatch of what a team puts out, for a single team and a chain's branches.

``RunParts`` is a run's parts, made once by ``RunExecution`` and handed to whoever drives a team of
the run (its own loop, or a ``ChainRunner``). ``Consumer.take`` turns one stream item into events,
in stream order: a streamed chunk into a delta, a chat message into a stored message, an input
request into ``input.requested``, tool calls and speaker selection into their events, a tool's
approval request and its answer (the run's own events, ``app/runtime/run/humans.py``) into theirs.
``Consumer.build_team`` makes a fresh AutoGen team wired to the run.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.messages import (
    BaseChatMessage,
    ModelClientStreamingChunkEvent,
    ThoughtEvent,
    ToolCallRequestEvent,
    UserInputRequestedEvent,
)
from autogen_agentchat.teams import BaseGroupChat

from app.conversations.repository import MessageSearch
from app.core.envelope import STREAMED_TYPES
from app.engine.calls import Observer
from app.engine.events import is_stored_message, translate_event
from app.engine.factory import Carry
from app.engine.tools import ToolContext
from app.runtime.outbox import TeamOutbox
from app.runtime.run.deps import RuntimeDeps
from app.runtime.run.humans import ApprovalAnswered, ApprovalAsked, Humans
from app.runtime.run.journal import Journal
from app.runtime.run.ledger import CallLedger
from app.runtime.run.messages import MessageLog
from app.runtime.run.replay import LoggedCalls, TurnReplay
from app.runtime.run.state import RunState, Stop
from app.runtime.run.tokens import TokenStreams
from app.teams.schemas import ResolvedTeamSpec


@dataclass(frozen=True, slots=True)
class RunParts:
    deps: RuntimeDeps
    state: RunState
    stop: Stop
    journal: Journal
    tokens: TokenStreams
    humans: Humans
    messages: MessageLog
    ledger: CallLedger


class Consumer:
    __slots__ = ("_parts", "logged")

    def __init__(self, parts: RunParts) -> None:
        self._parts = parts
        # a resumed turn, given again: its tool calls and results already in the log are not written twice
        self.logged: LoggedCalls | None = None

    def build_team(
        self,
        spec: ResolvedTeamSpec,
        outbox: TeamOutbox,
        observer: Observer,
        *,
        history_len: int = 0,
        carry: Carry | None = None,
        step: bool = False,
        replay: TurnReplay | None = None,
    ) -> BaseGroupChat:
        """A fresh team for ``spec``: its user proxies ask the run's person, its model calls are
        observed by ``observer`` and stream into the run's sinks, its tools see the run."""
        p = self._parts
        state, deps = p.state, p.deps
        team = deps.factory.build_team(
            spec,
            history_len=history_len,
            carry=carry,
            step=step,
            pins=replay.pins if replay is not None else None,
            inputs=p.humans.input_func_for,
            observer=observer,
            sinks=lambda agent: p.tokens.sink_for(agent, outbox),
            tools=ToolContext(
                state.run_id,
                state.conversation_id,
                state.principal_id,
                MessageSearch(deps.read_sessionmaker),
                approvals=p.humans.approvals_for(outbox),
                replay=replay.tools if replay is not None else None,
                logged=p.humans.calls.written,
            ),
        )
        outbox.attach(team)
        return team

    async def take(
        self,
        item: object,
        tags: dict[str, Any] | None = None,
        agents: frozenset[str] | None = None,
        echoes: Container[str] = (),
    ) -> None:
        """One item off a team's output queue. ``tags``: a chain's step and branch; ``agents``: whose
        streamed chunks are shown (the run's team's by default); ``echoes``: the ids of messages the
        run stored already (its task, its history) that the team puts out again."""
        p = self._parts
        agents = p.state.agents if agents is None else agents
        if isinstance(item, ModelClientStreamingChunkEvent):
            p.tokens.chunk(item, tags, agents)
            return
        if p.messages.held is not None:
            await p.messages.flush()  # a step's message is stored before anything that follows it
        if is_stored_message(item):
            assert isinstance(item, BaseChatMessage)
            if item.id not in echoes:
                await p.humans.received_before(item.source)
                await p.messages.store(item, tags)
        elif isinstance(item, UserInputRequestedEvent):
            pending = p.humans.pending_for(item.request_id, item.source)
            if not p.humans.parkable:  # a parking run writes its request with its parked row
                await p.humans.announce(pending, tags)
        elif isinstance(item, ThoughtEvent):
            p.messages.hold_thought(item)
        elif isinstance(item, ApprovalAsked | ApprovalAnswered):
            await self._approval(item, tags)
        else:
            events = translate_event(item, agents)
            if self.logged is not None:
                events = self.logged.unlogged(events)
            if isinstance(item, ToolCallRequestEvent):
                if events:
                    await p.messages.before_tool_calls(item, tags)
                else:
                    p.messages.drop_thought(item.source)  # a resumed turn's reply: its thought is stored
            for type_, data in events:
                if tags:
                    data.update(tags)
                if type_ in STREAMED_TYPES:
                    p.journal.stream(type_, data)
                else:
                    await p.journal.append(type_, data)
            if isinstance(item, ToolCallRequestEvent):
                p.humans.calls.handled(call.id for call in item.content)  # their approvals may be asked now

    async def _approval(self, item: ApprovalAsked | ApprovalAnswered, tags: dict[str, Any] | None) -> None:
        """A tool's call asks the person (``input.requested``), or the person decided: ``input.received``,
        and the decision stored as a message by `user`."""
        p = self._parts
        if isinstance(item, ApprovalAsked):
            await p.humans.announce(item.pending, tags)
            return
        decision = await p.humans.approval_received(item.pending, tags)
        env, rows = p.messages.numbered(decision, tags)  # stored now, mid-turn: never held for a step's end
        await p.journal.commit(env, rows)
