"""One run, from queued to its terminal event.

Builds a fresh AutoGen team from the run's frozen spec, continues the
conversation (saved team state, or the stored history when the team's shape
changed), consumes ``run_stream`` and turns every item into events: deltas
are published at once and recorded in the background; everything else is
committed first and published after. Every way a run stops goes through the
``CancellationToken`` (cancelling our consumer would not stop the team),
and the team is thrown away at the end, never reused.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from autogen_agentchat.agents import UserProxyAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import (
    BaseChatMessage,
    HandoffMessage,
    ModelClientStreamingChunkEvent,
    TextMessage,
    ThoughtEvent,
    ToolCallRequestEvent,
    UserInputRequestedEvent,
)
from autogen_core import CancellationToken
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.conversations.models import Message
from app.conversations.repository import ConversationRepository, MessageRepository, end_run, message_stored
from app.core.db import utcnow
from app.core.metrics import Metrics
from app.core.secrets import scrub_credentials
from app.core.settings import Settings
from app.engine.calls import ModelCall, TextSink
from app.engine.chunks import Reasoning
from app.engine.events import (
    CompletedMessage,
    completed_message,
    handoff_data,
    is_stored_message,
    message_completed_data,
    translate_event,
)
from app.engine.factory import InputFunc, TeamFactory, team_signature
from app.engine.interrupts import RunToken
from app.engine.providers import ModelConfigError
from app.engine.tools import ToolContext
from app.runs.models import Run
from app.runs.repository import RunEventRepository, model_call, run_started, set_run_fields, settle_run
from app.runtime.bus import EventBus
from app.runtime.chain import ChainRunner
from app.runtime.envelope import DELTA, REASONING_DELTA, STREAMED_TYPES, Envelope, usage_data
from app.runtime.inputs import NotAwaitingInput, PendingInput
from app.runtime.outbox import QueuedReasoning, TeamOutbox
from app.runtime.recorder import Apply, Change, EventRecorder, Rows, StorageError, Superseded
from app.runtime.redis_bus import RedisStreams
from app.teams.schemas import ResolvedTeamSpec

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeDeps:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    read_sessionmaker: async_sessionmaker[AsyncSession]
    bus: EventBus
    recorder: EventRecorder
    factory: TeamFactory
    metrics: Metrics
    # distributed mode: the run streams in Redis (a retried run continues after their last seq)
    streams: RedisStreams | None = None


@dataclass(slots=True)
class Outcome:
    status: str  # succeeded | failed | cancelled | timed_out
    stop_reason: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    state: dict[str, Any] | None = None


def classify_error(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return "storage_error"
    text = f"{type(exc).__name__}: {exc}"
    if "RateLimit" in text or "429" in text:
        return "rate_limited"
    if "Timeout" in text or "timed out" in text:
        return "model_timeout"
    return "model_error"


def public_error_text(exc: BaseException) -> str:
    """The error text a client may see: the root cause's message, bounded, with credentials removed."""
    text = str(exc).strip() or type(exc).__name__
    if "Traceback" in text:
        # AutoGen wraps agent errors as a RuntimeError carrying a formatted traceback; keep its last line
        text = text.strip().splitlines()[-1]
    return scrub_credentials(text)[:500]


@dataclass(slots=True)
class _Stream:
    """The answer text an agent's model call streamed, to link the message it becomes to its deltas."""

    message_id: str
    parts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)  # its reasoning pieces (the fast path's)


class RunExecution:
    def __init__(
        self, deps: RuntimeDeps, run: Run, *, known_seq: int | None = None, new_conversation: bool = False
    ) -> None:
        """``known_seq``: the run's last event, known to whoever hands it over (a run that never started
        has only its ``run.queued``), so it is not read back. ``new_conversation``: the run's request
        created its conversation, so there is no history or saved state to load."""
        self.deps = deps
        self.run_id = run.id
        self.conversation_id = run.conversation_id
        self.principal_id = run.principal_id
        self.task_text = run.task
        self.attempt = max(run.attempts or 0, 1)
        self.timeout_s = run.timeout_s
        self.input_timeout_s = run.input_timeout_s
        self.spec = ResolvedTeamSpec.model_validate(run.team_spec)
        self.agent_names = frozenset(m.name for m in self.spec.members)
        self.token = RunToken()
        self.cancel_reason: str | None = None
        self.cancel_event = asyncio.Event()
        self.pending_input: PendingInput | None = None
        self.model_failure: ModelCall | None = None
        # per agent, the texts its calls streamed on the fast token path and not yet matched to a message
        # (AutoGen runs ahead of the consumer: an agent may stream its next answer before its last is stored)
        self._streams: dict[str, deque[_Stream]] = {}
        self.seq = 0
        self.started_at: float | None = None
        # the run's usage: the sum of its model calls (every agent's, the selector's, tool-calling ones)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usage_estimated = False
        # per agent, a thought (AutoGen's ThoughtEvent) waiting for what follows it: the tool calls it
        # came with (then it is text the model said first: a message) or the message it reasoned towards
        self._thoughts: dict[str, ThoughtEvent] = {}
        self.message_count = 0
        self.base_position = 0
        self.result: dict[str, Any] | None = None
        self.settling = False
        self.ended = False  # its terminal event is stored (or could not be)
        self._known_seq = known_seq
        self._new_conversation = new_conversation

    # -- control ---------------------------------------------------------------------------------

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.token.cancel()
            self.cancel_event.set()
            if self.pending_input is not None and not self.pending_input.answer.done():
                self.pending_input.answer.cancel()

    def provide_input(self, request_id: str, content: str) -> None:
        if self.pending_input is None:
            raise NotAwaitingInput("The run is not waiting for input.")
        self.pending_input.provide(request_id, content)

    # -- events ----------------------------------------------------------------------------------

    def _envelope(self, type_: str, data: dict[str, Any]) -> Envelope:
        self.seq += 1
        return Envelope(self.run_id, self.seq, type_, utcnow(), data)

    async def _emit(
        self,
        type_: str,
        data: dict[str, Any],
        apply_for: Callable[[Envelope], Change] | None = None,
        *,
        then: tuple[str, dict[str, Any], Callable[[Envelope], Rows]] | None = None,
    ) -> Envelope:
        """Commit a durable event (and what it changes), then publish it.

        Every event of a run is emitted from its consumer loop, in stream order: AutoGen's runtime
        runs ahead of the stream, so an event emitted from inside an agent call would overtake events
        still queued in the stream. A terminal event is published even when it cannot be stored, so
        watchers learn how the run ended; the run's row is then settled by the next start's recovery.
        ``then``: the event that follows, written in the same transaction (its ``Rows`` with this
        event's) and published right after it.
        """
        env = self._envelope(type_, data)
        change = apply_for(env) if apply_for else None
        follower: Envelope | None = None
        if then is not None:
            follower = self._envelope(then[0], then[1])
            assert change is None or isinstance(change, Rows)
            before = change.executions if change is not None else ()
            change = Rows((*before, *then[2](follower).executions))
        try:
            await self.deps.recorder.commit(env, change, then=follower)
        except Superseded:
            # another process settled the run (our lease lapsed): its events stand; our watchers
            # re-attach and read them from storage
            self.deps.bus.detach(self.run_id)
            raise
        except StorageError:
            if env.terminal:
                self.deps.bus.publish(env)
            else:
                # never stored nor published: the next event takes its seq, no gap
                self.seq -= 1 if follower is None else 2
            raise
        for published in (env, follower):
            if published is not None:
                self.deps.bus.publish(published)
                self.deps.metrics.events.labels(type=published.type).inc()
        return env

    def _delta(self, data: dict[str, Any], type_: str = DELTA) -> None:
        env = self._envelope(type_, data)
        self.deps.bus.publish(env)
        self.deps.recorder.record(env)
        if type_ == DELTA:
            self.deps.metrics.deltas.inc()
        else:
            self.deps.metrics.events.labels(type=type_).inc()

    def sink_for(self, agent: str, outbox: TeamOutbox) -> TextSink:
        """Where an agent's model client puts each streamed chunk (the fast token path).

        The chunk becomes a delta at once when nothing the team put out before it is still on its
        way through the consumer loop (the outbox is idle); otherwise it goes onto the team's own
        output queue, where the loop meets it in stream order. Either way it skips AutoGen's routing
        of every chunk as a message through its runtime. A ``Reasoning`` chunk is a
        ``reasoning.delta`` of the same message id, and not part of the message's text.
        """

        streams = self._streams.setdefault(agent, deque())
        shown, tags = agent in outbox.shown, outbox.tags

        def sink(message_id: str, text: str) -> None:
            if not streams or streams[-1].message_id != message_id:
                streams.append(_Stream(message_id))
            if type(text) is Reasoning:
                text = str(text)
                streams[-1].reasoning.append(text)
                if outbox.idle and self.cancel_reason is None:
                    if shown:
                        self._delta({"message_id": message_id, "agent": agent, "text": text, **tags}, REASONING_DELTA)
                else:
                    outbox.put(QueuedReasoning(content=text, source=agent, full_message_id=message_id))
                return
            streams[-1].parts.append(text)
            if outbox.idle and self.cancel_reason is None:
                if shown:
                    self._delta({"message_id": message_id, "agent": agent, "text": text, **tags})
            else:
                outbox.put(ModelClientStreamingChunkEvent(content=text, source=agent, full_message_id=message_id))

        return sink

    def streamed_chunk(
        self, item: ModelClientStreamingChunkEvent, tags: dict[str, Any] | None, agents: frozenset[str]
    ) -> None:
        """A streamed chunk met on the team's output queue: a chunk of the fast path that waited its
        turn, or (``SWARM_FAST_TOKENS=false``) one of AutoGen's own streaming; a selector's is not shown."""
        agent = item.source
        if agent not in agents:
            return
        type_ = DELTA
        if type(item) is QueuedReasoning:
            type_ = REASONING_DELTA
        elif not self.deps.factory.fast_tokens:
            # AutoGen's own streaming: kept to link the message to its deltas (the sink keeps the fast path's)
            streams = self._streams.setdefault(agent, deque())
            if not streams or streams[-1].message_id != item.full_message_id:
                streams.append(_Stream(item.full_message_id or ""))
            streams[-1].parts.append(item.content)
        data = {"message_id": item.full_message_id, "agent": agent, "text": item.content}
        if tags:
            data.update(tags)
        self._delta(data, type_)

    async def handle_event(
        self, item: object, tags: dict[str, Any] | None = None, agents: frozenset[str] | None = None
    ) -> None:
        """An item the team put out that is not a chat message to store, in stream order (``tags``:
        a chain's step and branch; ``agents``: whose streamed chunks are shown, the team's by default)."""
        agents = self.agent_names if agents is None else agents
        if isinstance(item, ModelClientStreamingChunkEvent):
            self.streamed_chunk(item, tags, agents)
            return
        if isinstance(item, UserInputRequestedEvent):
            await self._announce_input(self._pending_for(item.request_id, item.source), tags)
            return
        if isinstance(item, ThoughtEvent):
            self._thoughts[item.source] = item  # what it is shows with the agent's next item
            return
        if isinstance(item, ToolCallRequestEvent) and item.source in self._thoughts:
            # the text the model said before its tool calls is a message of its own
            await self._store_thought(self._thoughts.pop(item.source), tags)
        for type_, data in translate_event(item, agents):
            if tags:
                data.update(tags)
            if type_ in STREAMED_TYPES:
                self._delta(data, type_)
            else:
                await self._emit(type_, data)

    def _set_status(self, status: str, **fields: Any) -> Callable[[Envelope], Apply]:
        def apply_for(_env: Envelope) -> Apply:
            return partial(set_run_fields, run_id=self.run_id, status=status, **fields)

        return apply_for

    # -- the run ---------------------------------------------------------------------------------

    async def execute(self, turn: asyncio.Lock) -> None:
        if self._known_seq is not None:
            self.seq = self._known_seq
        else:
            async with self.deps.read_sessionmaker() as session:
                self.seq = await RunEventRepository(session).max_seq(self.run_id)
            if self.deps.streams is not None:
                # an earlier attempt's deltas may be in Redis only: continue after them, never under them
                self.seq = max(self.seq, await self.deps.streams.top_seq(self.run_id))
        has_turn = False
        try:
            has_turn = await self._wait_turn(turn)
            outcome = await self._run() if has_turn else Outcome("cancelled", stop_reason=self.cancel_reason)
        except asyncio.CancelledError:
            # the task itself was cancelled (a hard stop): settle the run, then let the cancellation go on
            self.token.cancel()
            try:
                await asyncio.shield(self._finish(Outcome("cancelled", stop_reason=self.cancel_reason or "shutdown")))
            finally:
                if has_turn:
                    turn.release()
            raise
        except Exception as exc:
            log.error("run_crashed", run_id=self.run_id, exc_info=exc)
            outcome = Outcome("failed", error_code=classify_error(exc), error_message=public_error_text(exc))
        try:
            await self._finish(outcome)
        finally:
            # the conversation's next run starts only once this one's messages and state are stored
            if has_turn:
                turn.release()

    async def _wait_turn(self, turn: asyncio.Lock) -> bool:
        """Wait for the conversation's previous run to end; False when cancelled meanwhile."""
        if self.cancel_event.is_set():
            return False
        acquire = asyncio.ensure_future(turn.acquire())
        cancelled = asyncio.ensure_future(self.cancel_event.wait())
        try:
            await asyncio.wait({acquire, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not acquire.done():
                acquire.cancel()
        got = acquire.done() and not acquire.cancelled()
        if got and self.cancel_event.is_set():
            turn.release()
            return False
        return got

    async def _run_chain(self) -> Outcome:
        timer = asyncio.get_running_loop().call_later(self.timeout_s, self.request_cancel, "timed_out")
        try:
            return await ChainRunner(self).run()
        except StorageError as exc:
            self.token.cancel()
            return Outcome("failed", error_code="storage_error", error_message=str(exc))
        finally:
            timer.cancel()

    def _stopped_outcome(self) -> Outcome:
        """The outcome of a run stopped through its token, by reason."""
        if self.cancel_reason == "timed_out":
            message = f"The run exceeded its time limit of {self.timeout_s:g} s."
            return Outcome("timed_out", error_code="timed_out", error_message=message)
        if self.cancel_reason == "input_timeout":
            message = f"No answer to the input request within {self.input_timeout_s:g} s."
            return Outcome("timed_out", error_code="input_timeout", error_message=message)
        return Outcome("cancelled", stop_reason=self.cancel_reason)

    async def _run(self) -> Outcome:
        state, history = await self._load_context()
        self.started_at = time.monotonic()
        started = {"team": self.spec.name, "agents": sorted(self.agent_names)}

        def started_row(_env: Envelope) -> Rows:
            return Rows((run_started(self.run_id, utcnow(), self.attempt),))

        if self.spec.kind == "chain":
            await self._emit("run.started", started, started_row)
            log.info("run_started", run_id=self.run_id, team=self.spec.name)
            return await self._run_chain()
        # the task's message is the team's first: stored with run.started, in its transaction (a run's
        # first token waits for one commit of the event recorder before its model call, not two), and
        # not stored again when the team puts it out
        asked = TextMessage(content=self.task_text, source="user")
        await self._emit("run.started", started, started_row, then=self._message_event(asked))
        log.info("run_started", run_id=self.run_id, team=self.spec.name)
        # the conversation's earlier messages, replayed as context when it has no saved team state
        prior = [TextMessage(content=m.content, source=m.agent) for m in history if m.content]
        stored = {asked.id, *(m.id for m in prior)}  # what the team puts out again, not to store twice
        task: BaseChatMessage | list[BaseChatMessage] = [*prior, asked] if prior else asked
        outbox = TeamOutbox(self.agent_names)
        try:
            team = self.deps.factory.build_team(
                self.spec,
                history_len=len(prior),
                inputs=self.input_func_for,
                observer=self._observe_call,
                sinks=lambda agent: self.sink_for(agent, outbox),
                tools=ToolContext(self.run_id, self.conversation_id, self.principal_id, self.deps.read_sessionmaker),
            )
            outbox.attach(team)
            if state is not None:
                await team.load_state(state)
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))

        timer = asyncio.get_running_loop().call_later(self.timeout_s, self.request_cancel, "timed_out")
        stop_reason: str | None = None
        try:
            while True:
                to_user: HandoffMessage | None = None
                async for item in team.run_stream(task=task, cancellation_token=self.token):
                    if isinstance(item, TaskResult):
                        stop_reason = item.stop_reason
                        last = item.messages[-1] if item.messages else None
                        if isinstance(last, HandoffMessage) and last.target == "user":
                            to_user = last
                        continue
                    # every other item came off the team's output queue
                    if isinstance(item, ModelClientStreamingChunkEvent):
                        self.streamed_chunk(item, None, self.agent_names)  # the per-token path: no await
                    elif is_stored_message(item):
                        assert isinstance(item, BaseChatMessage)
                        if item.id not in stored:
                            await self._store_message(item)
                    else:
                        await self.handle_event(item)
                    outbox.handled()
                outbox.reset()
                if to_user is None:
                    break
                # a swarm agent handed off to the person: ask, then hand their answer back
                answer = await self.ask_person(to_user.source, to_user.content)
                task = HandoffMessage(source="user", target=to_user.source, content=answer)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or self.cancel_reason is None:
                raise
            return self._stopped_outcome()
        except Exception as exc:
            self.token.cancel()
            if self.cancel_reason is not None:
                return self._stopped_outcome()
            failure = self.model_failure
            if failure is not None and failure.error_code is not None:
                # AutoGen wraps the model's error in its own; the guarded client told us what it was
                message = scrub_credentials(failure.error_message or "", self.deps.settings.secret_values())
                outcome = Outcome("failed", error_code=failure.error_code, error_message=message)
            else:
                outcome = Outcome("failed", error_code=classify_error(exc), error_message=public_error_text(exc))
            log.warning("run_failed", run_id=self.run_id, error_code=outcome.error_code, error=outcome.error_message)
            return outcome
        finally:
            timer.cancel()
        if self.cancel_reason is not None:
            return self._stopped_outcome()
        return Outcome("succeeded", stop_reason=stop_reason, state=dict(await team.save_state()))

    def _observe_call(self, call: ModelCall) -> None:
        self.deps.metrics.observe_call(call)
        if call.error_code is not None and call.error_code != "cancelled":
            self.model_failure = call
        # what the provider billed, call by call: the run's usage (its messages hold only their own call's)
        self.prompt_tokens += call.prompt_tokens
        self.completion_tokens += call.completion_tokens
        self.usage_estimated = self.usage_estimated or call.usage_estimated
        record = dict(
            run_id=self.run_id,
            principal_id=self.principal_id,
            team_name=self.spec.name,
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

        self.deps.recorder.write(Rows((model_call(record),)))

    # -- human in the loop -----------------------------------------------------------------------

    def _pending_for(self, request_id: str, agent: str) -> PendingInput:
        # the input call and the stream's request event may come in either order; they meet here
        pending = self.pending_input
        if pending is None or pending.request_id != request_id:
            pending = self.pending_input = PendingInput(request_id, agent)
        return pending

    def input_func_for(self, agent: str) -> InputFunc:
        async def ask(prompt: str, cancellation_token: CancellationToken | None) -> str:
            pending = self._pending_for(UserProxyAgent.InputRequestContext.request_id(), agent)
            pending.prompt = prompt or pending.prompt
            return await self._await_answer(pending)

        return ask

    async def _await_answer(self, pending: PendingInput) -> str:
        try:
            async with asyncio.timeout(self.input_timeout_s):
                return await pending.answer
        except TimeoutError:
            self.request_cancel("input_timeout")
            raise

    async def _announce_input(self, pending: PendingInput, tags: dict[str, Any] | None = None) -> None:
        await self._emit(
            "input.requested",
            {"request_id": pending.request_id, "agent": pending.agent, "prompt": pending.prompt, **(tags or {})},
            self._set_status("awaiting_input"),
        )
        pending.announced = True

    async def _confirm_input(self, pending: PendingInput) -> None:
        pending.received = True
        await self._emit(
            "input.received",
            {"request_id": pending.request_id, "agent": pending.agent, "content": pending.answer.result()},
            self._set_status("running"),
        )
        self.pending_input = None

    async def ask_person(self, agent: str, prompt: str) -> str:
        """Ask outside any agent call (a swarm's hand-off to the user), from the consumer loop."""
        pending = self.pending_input = PendingInput(str(uuid.uuid4()), agent, prompt)
        await self._announce_input(pending)
        content = await self._await_answer(pending)
        await self._confirm_input(pending)
        return content

    def _streamed(self, agent: str, text: str) -> _Stream | None:
        """The oldest unmatched stream of this agent whose text this message is; older ones (a call
        that streamed only reasoning before its tool calls) never became a message and are dropped."""
        streams = self._streams.get(agent)
        if not streams:
            return None
        for index, stream in enumerate(streams):
            if "".join(stream.parts) == text:
                for _ in range(index + 1):
                    streams.popleft()
                return stream
        return None

    async def _load_context(self) -> tuple[dict[str, Any] | None, list[Message]]:
        if self._new_conversation:
            return None, []  # no messages yet, no saved state (base_position stays 0)
        async with self.deps.read_sessionmaker() as session:
            conversation = await ConversationRepository(session).for_update(self.conversation_id)
            assert conversation is not None
            self.base_position = conversation.message_count
            if conversation.state is not None and conversation.state_signature == team_signature(self.spec):
                return conversation.state, []
            if conversation.message_count:
                return None, await MessageRepository(session).history(self.conversation_id)
            return None, []

    async def _store_message(self, message: BaseChatMessage, tags: dict[str, Any] | None = None) -> None:
        pending = self.pending_input
        if pending is not None and pending.agent == message.source and pending.answer.done() and not pending.received:
            await self._confirm_input(pending)
        thought = self._thoughts.pop(message.source, None)
        # a thought right before an agent's message is the reasoning that led to it
        await self._emit(*self._message_event(message, tags, reasoning=thought.content if thought else None))
        if isinstance(message, HandoffMessage):
            await self._emit("handoff", {**handoff_data(message), **(tags or {})})

    def _message_event(
        self, message: BaseChatMessage | ThoughtEvent, tags: dict[str, Any] | None = None, reasoning: str | None = None
    ) -> tuple[str, dict[str, Any], Callable[[Envelope], Rows]]:
        """A message's ``message.completed``: its type, its data, and the rows that store it; the
        message counts as the run's next from here on."""
        m = completed_message(message)
        streamed = self._streamed(m.agent, m.text) if isinstance(message, TextMessage | ThoughtEvent) else None
        if streamed is not None:
            # the message keeps the id its deltas carried (AutoGen gives a message that follows a
            # thought a new id, and the fast path's calls have their own), and its reasoning is the
            # reasoning its call streamed
            m.id = streamed.message_id
            reasoning = "".join(streamed.reasoning) or reasoning
        self.message_count += 1
        position = self.base_position + self.message_count
        if m.agent != "user" and isinstance(message, BaseChatMessage):
            self.result = {"message_id": m.id, "agent": m.agent, "text": m.text}
        data = message_completed_data(m, position)
        if reasoning:
            data["reasoning"] = reasoning
        if tags:
            data.update(tags)
        return "message.completed", data, self._message_writer(m, position)

    async def _store_thought(self, thought: ThoughtEvent, tags: dict[str, Any] | None) -> None:
        """What a model said before its tool calls, stored and announced as a message of its own."""
        await self._emit(*self._message_event(thought, tags))

    def _message_writer(self, m: CompletedMessage, position: int) -> Callable[[Envelope], Rows]:
        def apply_for(env: Envelope) -> Rows:
            return Rows(
                message_stored(
                    {
                        "id": m.id,
                        "conversation_id": self.conversation_id,
                        "run_id": self.run_id,
                        "principal_id": self.principal_id,
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

        return apply_for

    async def _finish(self, outcome: Outcome) -> None:
        self.settling = True
        finished = utcnow()
        duration_ms = int((time.monotonic() - self.started_at) * 1000) if self.started_at else 0
        usage = usage_data(self.prompt_tokens, self.completion_tokens, self.usage_estimated)
        data: dict[str, Any] = {"status": outcome.status, "usage": usage, "duration_ms": duration_ms}
        if outcome.status == "succeeded":
            type_ = "run.completed"
            data["stop_reason"] = outcome.stop_reason
            data["result"] = self.result
        elif outcome.status == "cancelled":
            type_ = "run.cancelled"
            data["reason"] = outcome.stop_reason or "cancelled"
        else:
            type_ = "run.failed"
            data["error"] = {"code": outcome.error_code, "message": outcome.error_message}
        signature = team_signature(self.spec)

        def settle(conn: Connection, env: Envelope) -> None:
            settled = settle_run(
                conn,
                self.run_id,
                status=outcome.status,
                finished_at=finished,
                stop_reason=outcome.stop_reason if outcome.status != "failed" else None,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                usage_estimated=self.usage_estimated,
                message_count=self.message_count,
                last_seq=env.seq,
                result=self.result,
                lease_expires_at=None,
            )
            if not settled:
                # another process settled it first (our lease lapsed): its end stands, ours is dropped
                raise Superseded(f"run {self.run_id} was settled elsewhere")
            # a team that did not finish cleanly is not trusted to continue from: the next run
            # rebuilds its context from the stored messages instead
            end_run(
                conn,
                self.conversation_id,
                self.run_id,
                state=outcome.state,
                signature=signature if outcome.state is not None else None,
                at=finished,
            )

        try:
            await self._emit(type_, data, lambda env: partial(settle, env=env))
        except StorageError:
            log.error("run_settle_failed", run_id=self.run_id)
        finally:
            self.ended = True
        self.deps.metrics.runs_finished.labels(status=outcome.status).inc()
        log.info(
            "run_finished",
            run_id=self.run_id,
            status=outcome.status,
            error_code=outcome.error_code,
            duration_ms=duration_ms,
            messages=self.message_count,
        )
