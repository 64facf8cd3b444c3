"""One run, from queued to its terminal event.

``RunExecution`` makes the run's parts (``app/runtime/run/``), waits for the conversation's turn,
drives the team (or hands a chain to ``ChainRunner``) and settles the run. For a team it builds a
fresh AutoGen team from the run's frozen spec, continues the conversation (saved team state, or the
stored history when the team's shape changed), and consumes ``run_stream``, every item through the
``Consumer``. Every way a run stops goes through its ``Stop`` token (cancelling our consumer would not
stop the team), and the team is thrown away at the end, never reused.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, ModelClientStreamingChunkEvent, TextMessage
from autogen_agentchat.teams import BaseGroupChat

from app.conversations.models import Message
from app.conversations.repository import ConversationRepository, MessageRepository
from app.core.db import utcnow
from app.core.envelope import Envelope
from app.engine.factory import team_signature
from app.engine.providers import ModelConfigError
from app.runs.models import Run
from app.runs.repository import RunEventRepository, run_started
from app.runtime.chain import ChainRunner
from app.runtime.outbox import TeamOutbox
from app.runtime.recorder import Rows, StorageError
from app.runtime.run.consumer import Consumer, RunParts
from app.runtime.run.deps import RuntimeDeps
from app.runtime.run.humans import Humans
from app.runtime.run.journal import Journal
from app.runtime.run.ledger import CallLedger
from app.runtime.run.messages import MessageLog
from app.runtime.run.outcome import Outcome, failed, public_error_text, stopped
from app.runtime.run.settle import settle
from app.runtime.run.state import RunState, Stop
from app.runtime.run.tokens import TokenStreams

log = structlog.get_logger(__name__)

Task = BaseChatMessage | list[BaseChatMessage]


class RunExecution:
    def __init__(
        self, deps: RuntimeDeps, run: Run, *, known_seq: int | None = None, new_conversation: bool = False
    ) -> None:
        """``known_seq``: the run's last event, known to whoever hands it over (a run that never started
        has only its ``run.queued``), so it is not read back. ``new_conversation``: the run's request
        created its conversation, so there is no history or saved state to load."""
        state = RunState.of(run, new_conversation=new_conversation)
        stop = Stop()
        journal = Journal(state.run_id, deps.bus, deps.recorder, deps.metrics)
        tokens = TokenStreams(journal, stop, fast_tokens=deps.factory.fast_tokens)
        messages = MessageLog(state, journal, tokens)
        self.parts = RunParts(
            deps,
            state,
            stop,
            journal,
            tokens,
            Humans(state, journal, stop),
            messages,
            CallLedger(state, journal, deps.metrics),
        )
        self.consumer = Consumer(self.parts)
        self.started_at: float | None = None
        self.settling = False  # writing (or has written) its terminal event
        self.ended = False  # its terminal event is stored (or could not be)
        self._known_seq = known_seq

    # -- control ---------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.parts.state.run_id

    @property
    def conversation_id(self) -> str:
        return self.parts.state.conversation_id

    @property
    def principal_id(self) -> str:
        return self.parts.state.principal_id

    @property
    def cancel_reason(self) -> str | None:
        return self.parts.stop.reason

    def request_cancel(self, reason: str) -> None:
        self.parts.stop.request(reason)

    def provide_input(self, request_id: str, content: str) -> None:
        self.parts.humans.provide(request_id, content)

    # -- the run ---------------------------------------------------------------------------------

    async def execute(self, turn: asyncio.Lock) -> None:
        if (lease := self.parts.state.lease) is not None:
            self.parts.deps.recorder.hold_lease(self.run_id, *lease)
        seq, stored = await self._last_seq()
        self.parts.journal.resume(seq, stored=stored)
        has_turn = False
        try:
            has_turn = await self._wait_turn(turn)
            outcome = await self._run() if has_turn else Outcome("cancelled", stop_reason=self.cancel_reason)
        except asyncio.CancelledError:
            # the task itself was cancelled (a hard stop): settle the run, then let the cancellation go on
            self.parts.stop.token.cancel()
            try:
                await asyncio.shield(self._finish(Outcome("cancelled", stop_reason=self.cancel_reason or "shutdown")))
            finally:
                if has_turn:
                    turn.release()
            raise
        except Exception as exc:
            log.error("run_crashed", run_id=self.run_id, exc_info=exc)
            outcome = failed(exc, None)
        try:
            await self._finish(outcome)
        finally:
            # the conversation's next run starts only once this one's messages and state are stored
            if has_turn:
                turn.release()

    async def _last_seq(self) -> tuple[int, int]:
        """The run's last event anywhere, and its last stored one."""
        if self._known_seq is not None:
            return self._known_seq, self._known_seq
        deps = self.parts.deps
        async with deps.read_sessionmaker() as session:
            stored = await RunEventRepository(session).max_seq(self.run_id)
        if deps.streams is not None:
            # an earlier attempt's deltas may be in Redis only: continue after them, never under them
            return max(stored, await deps.streams.top_seq(self.run_id)), stored
        return stored, stored

    async def _wait_turn(self, turn: asyncio.Lock) -> bool:
        """Wait for the conversation's previous run to end; False when cancelled meanwhile."""
        requested = self.parts.stop.requested
        if requested.is_set():
            return False
        acquire = asyncio.ensure_future(turn.acquire())
        cancelled = asyncio.ensure_future(requested.wait())
        try:
            await asyncio.wait({acquire, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not acquire.done():
                acquire.cancel()
        got = acquire.done() and not acquire.cancelled()
        if got and requested.is_set():
            turn.release()
            return False
        return got

    async def _run(self) -> Outcome:
        """The run from ``run.started`` on, within its time limit."""
        p = self.parts
        state, history = await self._load_context()
        self.started_at = time.monotonic()
        timer = asyncio.get_running_loop().call_later(p.state.timeout_s, p.stop.request, "timed_out")
        try:
            if p.state.spec.kind == "chain":
                return await self._run_chain()
            return await self._run_team(state, history)
        finally:
            timer.cancel()

    def _started(self) -> tuple[Envelope, Rows]:
        p = self.parts
        env = p.journal.envelope("run.started", {"team": p.state.spec.name, "agents": sorted(p.state.agents)})
        return env, Rows((run_started(self.run_id, utcnow(), p.state.attempt),))

    async def _run_chain(self) -> Outcome:
        p = self.parts
        env, rows = self._started()
        await p.journal.commit(env, rows)
        log.info("run_started", run_id=self.run_id, team=p.state.spec.name)
        try:
            return await ChainRunner(p, self.consumer).run()
        except StorageError as exc:
            p.stop.token.cancel()
            return Outcome("failed", error_code="storage_error", error_message=str(exc))

    async def _run_team(self, saved: dict[str, Any] | None, history: list[Message]) -> Outcome:
        p = self.parts
        # the task's message is the team's first: stored with run.started, in its transaction (a run's
        # first token waits for one commit of the event recorder before its model call, not two), and
        # not stored again when the team puts it out
        asked = TextMessage(content=p.state.task, source="user")
        started, rows = self._started()
        first, first_rows = p.messages.numbered(asked)
        await p.journal.commit(started, Rows((*rows.executions, *first_rows.executions)), then=first)
        log.info("run_started", run_id=self.run_id, team=p.state.spec.name)
        # the conversation's earlier messages, replayed as context when it has no saved team state
        prior = [TextMessage(content=m.content, source=m.agent) for m in history if m.content]
        echoes = {asked.id, *(m.id for m in prior)}
        task: Task = [*prior, asked] if prior else asked
        outbox = TeamOutbox(p.state.agents)
        try:
            team = self.consumer.build_team(p.state.spec, outbox, p.ledger.observe, history_len=len(prior))
            if saved is not None:
                await team.load_state(saved)
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))
        try:
            stop_reason = await self._consume(team, task, outbox, echoes)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or self.cancel_reason is None:
                raise
            return stopped(p.state, self.cancel_reason)
        except Exception as exc:
            p.stop.token.cancel()
            if self.cancel_reason is not None:
                return stopped(p.state, self.cancel_reason)
            outcome = failed(exc, p.ledger.failure, p.deps.settings.secret_values())
            log.warning("run_failed", run_id=self.run_id, error_code=outcome.error_code, error=outcome.error_message)
            return outcome
        if self.cancel_reason is not None:
            return stopped(p.state, self.cancel_reason)
        return Outcome("succeeded", stop_reason=stop_reason, state=dict(await team.save_state()))

    async def _consume(self, team: BaseGroupChat, task: Task, outbox: TeamOutbox, echoes: set[str]) -> str | None:
        """Drive the team to its end, every item through the consumer; a swarm's hand-off to the user
        asks the person and hands their answer back. The team's stop reason."""
        p = self.parts
        tokens, consumer, agents, token = p.tokens, self.consumer, p.state.agents, p.stop.token
        stop_reason: str | None = None
        while True:
            to_user: HandoffMessage | None = None
            async for item in team.run_stream(task=task, cancellation_token=token):
                if isinstance(item, TaskResult):
                    stop_reason = item.stop_reason
                    last = item.messages[-1] if item.messages else None
                    if isinstance(last, HandoffMessage) and last.target == "user":
                        to_user = last
                    continue
                # every other item came off the team's output queue
                if isinstance(item, ModelClientStreamingChunkEvent):
                    tokens.chunk(item, None, agents)  # the per-token path: no await
                else:
                    await consumer.take(item, echoes=echoes)
                outbox.handled()
            outbox.reset()
            if to_user is None:
                return stop_reason
            answer = await p.humans.ask_person(to_user.source, to_user.content)
            task = HandoffMessage(source="user", target=to_user.source, content=answer)

    async def _load_context(self) -> tuple[dict[str, Any] | None, list[Message]]:
        """The conversation's saved team state, or (the team's shape changed) its stored messages."""
        p = self.parts
        if p.state.new_conversation:
            return None, []  # no messages yet, no saved state (base_position stays 0)
        async with p.deps.read_sessionmaker() as session:
            conversation = await ConversationRepository(session).for_update(self.conversation_id)
            assert conversation is not None
            p.messages.base_position = conversation.message_count
            if conversation.state is not None and conversation.state_signature == team_signature(p.state.spec):
                return conversation.state, []
            if conversation.message_count:
                return None, await MessageRepository(session).history(self.conversation_id)
            return None, []

    async def _finish(self, outcome: Outcome) -> None:
        self.settling = True
        try:
            await settle(self.parts, outcome, self.started_at)
        finally:
            self.ended = True
            self.parts.deps.recorder.release_lease(self.run_id)
