"""One run, from queued to its terminal event.

``RunExecution`` makes the run's parts (``app/runtime/run/``), waits for the conversation's turn,
drives the team (or hands a chain to ``ChainRunner``) and settles the run. For a team it builds a
fresh AutoGen team from the run's frozen spec, continues the conversation (saved team state, or the
stored history when the team's shape changed), and consumes ``run_stream``, every item through the
``Consumer``. Every way a run stops goes through its ``Stop`` token (cancelling our consumer would not
stop the team), and the team is thrown away at the end, never reused.

A run whose team needs a person parks (``app/runtime/parking.py``) when its kind can: the team's
state, the request and what the run used are committed with ``input.requested``, and the execution
ends without a terminal event. A parked run that was answered is executed again like any queued run:
this class finds its parked row, rebuilds the team, loads the state and gives the answer to the
agent that asked, after ``input.received``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any, Final

import structlog
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, ModelClientStreamingChunkEvent, TextMessage
from autogen_agentchat.teams import BaseGroupChat
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from app.conversations.models import Message
from app.conversations.repository import ConversationRepository, MessageRepository
from app.core.db import utcnow
from app.core.envelope import Envelope
from app.core.repository import Execution
from app.engine.approvals import ToolApprovalMessage, ToolDecision
from app.engine.factory import Carry, limit_reached, stepped, team_signature
from app.engine.providers import ModelConfigError
from app.engine.tools import ToolRegistry
from app.patches.autogen_team_id import team_id
from app.runs.answers import approval_received, approval_requested
from app.runs.models import ParkedRun, Run, RunCheckpoint
from app.runs.repository import (
    RunEventRepository,
    RunQueueRepository,
    checkpoint_saved,
    park_run,
    run_resumed,
    run_started,
    unpark_run,
)
from app.runtime.chain import ChainRunner
from app.runtime.inputs import PendingApproval, PendingInput
from app.runtime.outbox import TeamOutbox
from app.runtime.parking import PARK_NOISE, Carried
from app.runtime.recorder import Rows, StorageError
from app.runtime.run.consumer import Consumer, RunParts
from app.runtime.run.deps import RuntimeDeps
from app.runtime.run.humans import Humans
from app.runtime.run.journal import Journal
from app.runtime.run.ledger import CallLedger
from app.runtime.run.messages import MessageLog
from app.runtime.run.outcome import Outcome, failed, public_error_text, stopped
from app.runtime.run.replay import REPLAY_TYPES, TurnReplay, turn_replay
from app.runtime.run.settle import settle
from app.runtime.run.state import RunState, Stop
from app.runtime.run.tokens import TokenStreams
from app.teams.schemas import ResolvedTeamSpec

log = structlog.get_logger(__name__)

Task = BaseChatMessage | list[BaseChatMessage]


class _Parked:
    """Not an outcome: the run parked, waiting for a person; it has no terminal event yet."""


PARKED: Final = _Parked()


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a run resumes mid-way (``RunExecution._resume_point``): taken again after a crash, or parked on
    a tool's approval and answered."""

    state: dict[str, Any] | None  # the team's state after the run's last whole turn; None: from its task
    seq: int | None  # that turn's last event
    carried: Carried | None  # what the run had used by then
    replay: TurnReplay  # the interrupted turn, from the log after it
    history: list[Message]  # from its task: the conversation's messages before the run
    task_id: str | None  # from its task: the stored task message's id (not stored again)


@dataclass(frozen=True, slots=True)
class _Context:
    """What a run's team starts from (``RunExecution._load_context``): at most one of these is set."""

    state: dict[str, Any] | None = None  # the conversation's saved team state
    history: list[Message] = field(default_factory=list)  # or its stored messages
    parked: ParkedRun | None = None  # a parked run, answered
    resume: ResumePoint | None = None  # a run taken again after a crash, or parked on an approval


def parkable(spec: ResolvedTeamSpec) -> bool:
    """Whether a team of ``spec`` parks when it needs a person, instead of waiting live: round robin and
    selector (at a user proxy's turn), a swarm (at a hand-off to the user; not one with a user proxy
    member). A graph's user proxy may run beside another node and a chain's branches beside each
    other, which a park would cut short: those wait live."""
    if spec.kind in ("round_robin", "selector"):
        return True
    return spec.kind == "swarm" and not any(m.kind == "user_proxy" for m in spec.members)


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
        self.active_before = 0.0  # seconds the run executed before it parked (a resumed run's)
        self.counted = 0  # chat messages the team's termination has counted in this run (``Carry.messages``)
        self.history_len = 0  # the conversation's messages replayed as the team's context (``history_len``)
        self.parked = False  # it parked: its task ends without a terminal event
        self.on_parked: Callable[[], None] | None = None  # told (by its manager) once it has parked
        # step mode: the team's state after its last whole turn and that turn's last event (None: from its task)
        self.checkpoint: tuple[dict[str, Any] | None, int | None] = (None, None)
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

    def provide_input(self, request_id: str, content: str) -> bool:
        """Answer the run's input request here; False when it has parked (its row takes the answer)."""
        if self.parked:
            return False
        self.parts.humans.provide(request_id, content)
        return True

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
            if isinstance(outcome, _Parked):
                self._parked()
                if has_turn:
                    turn.release()
                return
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

    async def _run(self) -> Outcome | _Parked:
        """The run from ``run.started`` on (or from a park, answered; or from a crash), within its time limit."""
        p = self.parts
        context = await self._load_context()
        self.started_at = time.monotonic()
        left = p.state.timeout_s - self.active_before
        timer = asyncio.get_running_loop().call_later(max(left, 0.0), p.stop.request, "timed_out")
        try:
            if p.state.spec.kind == "chain":
                return await self._run_chain()
            if context.parked is not None and context.resume is not None:
                return await self._resume_approval(context.parked, context.resume)
            if context.parked is not None:
                return await self._resume_team(context.parked)
            if context.resume is not None:
                return await self._resume_crashed(context.resume)
            return await self._run_team(context.state, context.history)
        finally:
            timer.cancel()

    def _started(self) -> tuple[Envelope, Rows]:
        p = self.parts
        if p.state.started:  # a chain taken again after a crash starts over: it says it resumed
            env = p.journal.envelope("run.resumed", {"attempt": p.state.attempt, "checkpoint_seq": None})
            return env, Rows((run_resumed(self.run_id, p.state.attempt),))
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

    async def _run_team(self, saved: dict[str, Any] | None, history: list[Message]) -> Outcome | _Parked:
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
            team = self.consumer.build_team(
                p.state.spec, outbox, p.ledger.observe, history_len=len(prior), step=self.steps
            )
            if saved is not None:
                await team.load_state(saved)
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))
        self.history_len = len(prior)
        p.humans.approvals_park = self.steps and p.humans.parkable  # from its task, should its first turn park
        return await self._drive(team, task, outbox, echoes)

    async def _resume_team(self, row: ParkedRun) -> Outcome | _Parked:
        """A parked run, answered: its team rebuilt from the frozen spec with what the run had used,
        its state loaded, and the answer given to the agent that asked, after ``input.received``."""
        p = self.parts
        carried = Carried.from_json(row.carry)
        answer = row.answer or ""
        data = {"request_id": row.request_id, "agent": row.agent, "content": answer}
        received = p.journal.envelope("input.received", data)
        await p.journal.commit(received, partial(unpark_run, run_id=self.run_id, attempts=p.state.attempt))
        log.info("run_resumed", run_id=self.run_id, parked_s=round((received.at - row.parked_at).total_seconds(), 3))
        task: BaseChatMessage
        if row.kind == "handoff":
            task = HandoffMessage(source="user", target=row.agent, content=answer)
        else:
            task = TextMessage(source=row.agent, content=answer)
        outbox = TeamOutbox(p.state.agents)
        carry = Carry(
            messages=carried.counted,
            elapsed_s=carried.active_s,
            prompt_tokens=carried.prompt_tokens,
            completion_tokens=carried.completion_tokens,
        )
        try:
            team = self.consumer.build_team(
                p.state.spec, outbox, p.ledger.observe, history_len=carried.history_len, carry=carry, step=self.steps
            )
            await team.load_state(row.state or {})
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))
        self.counted, self.history_len = carried.counted, carried.history_len
        # the state loaded is before the answer: a tool's call before the next turn's end waits live
        p.humans.approvals_park = False
        return await self._drive(team, task, outbox, set())

    async def _resume_crashed(self, point: ResumePoint) -> Outcome | _Parked:
        """A run taken again after its process died: ``run.resumed``, then on from its checkpoint."""
        p = self.parts
        data = {"attempt": p.state.attempt, "checkpoint_seq": point.seq}
        resumed = p.journal.envelope("run.resumed", data)
        await p.journal.commit(resumed, Rows((run_resumed(self.run_id, p.state.attempt),)))
        log.info("run_resumed_after_crash", run_id=self.run_id, **data)
        return await self._go_on(point)

    async def _resume_approval(self, row: ParkedRun, point: ResumePoint) -> Outcome | _Parked:
        """A run parked on a tool's approval, answered: ``input.received`` and the decision's message, then
        on from the state before the turn that called the tool, the turn played again up to the call,
        which runs as the person decided (``Humans.decided``)."""
        p = self.parts
        call = (point.carried.call if point.carried else None) or {}
        decision = ToolDecision.from_wire(row.answer or "") or ToolDecision("reject", reason="no decision was given")
        answer = approval_received(decision, call.get("name", ""), call.get("arguments") or {})
        received = p.journal.envelope("input.received", {"request_id": row.request_id, "agent": row.agent, **answer})
        message = ToolApprovalMessage(
            source="user",
            content=answer["content"],
            tool=call.get("name", ""),
            call_id=call.get("call_id"),
            decision=decision.decision,
            arguments=decision.arguments,
        )
        env, rows = p.messages.numbered(message)
        await p.journal.commit(received, partial(_unparked, rows, self.run_id, p.state.attempt), then=env)
        log.info("run_resumed", run_id=self.run_id, parked_s=round((received.at - row.parked_at).total_seconds(), 3))
        if (call_id := call.get("call_id")) is not None:
            p.humans.decided[call_id] = decision
            point.replay.tools.cut.discard(call_id)  # it never ran: it runs now, as decided
        return await self._go_on(point)

    async def _go_on(self, point: ResumePoint) -> Outcome | _Parked:
        """The team rebuilt where ``point`` says, the turn it interrupted played again (``app/engine/pins.py``)."""
        p = self.parts
        self.consumer.logged = point.replay.logged
        self.checkpoint = point.state, point.seq
        task: Task | None = None
        echoes: set[str] = set()
        carry: Carry | None = None
        if point.carried is not None and point.seq is not None:
            carried = point.carried
            self.counted, self.history_len = carried.counted, carried.history_len
            carry = Carry(carried.counted, carried.active_s, p.ledger.prompt_tokens, p.ledger.completion_tokens)
        else:
            prior = [TextMessage(content=m.content, source=m.agent) for m in point.history if m.content]
            asked = TextMessage(content=p.state.task, source="user", id=point.task_id or str(uuid.uuid4()))
            task, echoes = ([*prior, asked] if prior else asked), {asked.id, *(m.id for m in prior)}
            self.history_len = len(prior)
        p.humans.approvals_park = self.steps and p.humans.parkable
        outbox = TeamOutbox(p.state.agents)
        try:
            team = self.consumer.build_team(
                p.state.spec,
                outbox,
                p.ledger.observe,
                history_len=self.history_len,
                carry=carry,
                step=self.steps,
                replay=point.replay,
            )
            if point.state is not None:
                await team.load_state(point.state)
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))
        return await self._drive(team, task, outbox, echoes)

    async def _drive(
        self, team: BaseGroupChat, task: Task | None, outbox: TeamOutbox, echoes: set[str]
    ) -> Outcome | _Parked:
        """Consume the team to its end (or to a park), and say how the run ended."""
        p = self.parts
        try:
            stop_reason = await self._consume(team, task, outbox, echoes)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            if self.cancel_reason is None and p.humans.parked is not None:
                return await self._park(team)  # a tool's call parked the run: the team was stopped for it
            if self.cancel_reason is None:
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
        if isinstance(stop_reason, _Parked):
            return await self._park(team)
        return Outcome("succeeded", stop_reason=stop_reason, state=dict(await team.save_state()))

    async def _consume(
        self, team: BaseGroupChat, task: Task | None, outbox: TeamOutbox, echoes: set[str]
    ) -> str | _Parked | None:
        """Drive the team to its end, every item through the consumer; a swarm's hand-off to the user
        asks the person and hands their answer back. The team's stop reason, or ``PARKED``."""
        team_ident = team_id(team)
        self.parts.humans.on_park = lambda: PARK_NOISE.teams.add(team_ident)
        try:
            return await self._consume_team(team, task, outbox, echoes)
        finally:
            PARK_NOISE.teams.discard(team_ident)

    async def _consume_team(
        self, team: BaseGroupChat, task: Task | None, outbox: TeamOutbox, echoes: set[str]
    ) -> str | _Parked | None:
        p = self.parts
        humans, step = p.humans, stepped(team)
        p.messages.defer = step is not None  # a turn's message is stored with the checkpoint after it
        while True:
            if step is not None:
                step.expect_task(task is not None)
            try:
                stop_reason, to_user = await self._stream(team, task, outbox, echoes)
            except Exception:
                if humans.parked is None:
                    raise
                # a user proxy's turn raised Park (AutoGen wraps it): the team stopped at the person's turn
                return PARKED
            if humans.parked is not None:
                return PARKED  # a tool's call parked the run, and the team ended without raising
            outbox.reset()
            if step is not None and step.stepped:
                # a turn ended: its message is stored with the team's state after it, and the team goes on
                await p.messages.flush(await self._checkpoint(team))
                task = None
                continue
            if to_user is None or limit_reached(team):
                return stop_reason  # a hand-off to the user that also reached a limit ends the run
            if humans.parkable:
                humans.park(PendingInput(str(uuid.uuid4()), to_user.source, to_user.content), "handoff")
                return PARKED
            answer = await humans.ask_person(to_user.source, to_user.content)
            task = HandoffMessage(source="user", target=to_user.source, content=answer)

    async def _stream(
        self, team: BaseGroupChat, task: Task | None, outbox: TeamOutbox, echoes: set[str]
    ) -> tuple[str | None, HandoffMessage | None]:
        """One ``run_stream`` of the team, every item through the consumer: its stop reason, and the
        hand-off to the user it ended with, if any."""
        p = self.parts
        tokens, consumer, agents = p.tokens, self.consumer, p.state.agents
        stop_reason: str | None = None
        to_user: HandoffMessage | None = None
        async for item in team.run_stream(task=task, cancellation_token=p.stop.token):
            if isinstance(item, TaskResult):
                stop_reason = item.stop_reason
                last = item.messages[-1] if item.messages else None
                if isinstance(last, HandoffMessage) and last.target == "user":
                    to_user = last
                continue
            # every other item came off the team's output queue
            if isinstance(item, ModelClientStreamingChunkEvent):
                tokens.chunk(item, None, agents)  # the per-token path: no await
            elif p.humans.parked is not None and p.humans.parked_kind == "approval":
                # the team is being stopped for a tool's approval (asked once the call's `tool.call` was
                # written): what the turn still puts out is made again on resume. A user proxy's park
                # comes with the turns before it still queued: those are the run's, and stored.
                pass
            else:
                if isinstance(item, BaseChatMessage):
                    self.counted += 1
                await consumer.take(item, echoes=echoes)
            outbox.handled()
        return stop_reason, to_user

    @property
    def steps(self) -> bool:
        """Whether the run's team stops after each turn to keep a checkpoint (``Stepped``): its kind can go on
        from a saved state, and it may resume after a crash (it has retries left) or park on a tool's
        approval (from the state before the turn that called the tool)."""
        state = self.parts.state
        if not parkable(state.spec):
            return False
        return state.attempt < state.max_attempts or needs_approval(state.spec, self.parts.deps.factory.tools)

    async def _checkpoint(self, team: BaseGroupChat) -> tuple[Execution, ...]:
        """The team's state after its turn, and what the run has used, as the run's checkpoint."""
        p = self.parts
        state, seq = dict(await team.save_state()), p.journal.seq  # the turn's last event: its message
        values = {"seq": seq, "state": state, "carry": self._carried().to_json(), "at": utcnow()}
        self.checkpoint = state, seq
        p.humans.approvals_park = p.humans.parkable  # the next turn's tool calls may park the run
        return checkpoint_saved(self.run_id, values)

    def _carried(self) -> Carried:
        """What the run has used and stored so far, for the process that resumes it."""
        p = self.parts
        ledger = p.ledger
        return Carried(
            counted=self.counted,
            history_len=self.history_len,
            stored=p.messages.count,
            active_s=self.active_before + time.monotonic() - (self.started_at or time.monotonic()),
            prompt_tokens=ledger.prompt_tokens,
            completion_tokens=ledger.completion_tokens,
            estimated=ledger.estimated,
            by_model={model: [pt, ct] for model, (pt, ct) in ledger.by_model.items()},
            result=p.messages.result,
        )

    async def _park(self, team: BaseGroupChat) -> Outcome | _Parked:
        """Commit the team's state, the request and what the run used, with ``input.requested``."""
        p = self.parts
        pending = p.humans.parked
        assert pending is not None
        await self._flush_held()  # the turn before the person's (step mode holds its message)
        data = {"request_id": pending.request_id, "agent": pending.agent, "prompt": pending.prompt, "kind": "input"}
        state: dict[str, Any] | None
        carried = self._carried()
        if isinstance(pending, PendingApproval):
            # the team was stopped mid-turn: it resumes from the state before the turn, played again
            state, seq = self.checkpoint
            call = approval_requested(pending.call)
            data.update(call)
            carried = replace(carried, checkpoint_seq=seq, call=call["tool"])
        else:
            state = dict(await team.save_state())
        env = p.journal.envelope("input.requested", data)
        row = {
            "principal_id": p.state.principal_id,
            "conversation_id": p.state.conversation_id,
            "request_id": pending.request_id,
            "kind": p.humans.parked_kind,
            "agent": pending.agent,
            "prompt": pending.prompt,
            "state": state,
            "carry": carried.to_json(),
            "parked_at": env.at,
            "deadline": env.at + timedelta(seconds=p.state.input_timeout_s),
        }
        values = {
            "message_count": carried.stored,
            "prompt_tokens": carried.prompt_tokens,
            "completion_tokens": carried.completion_tokens,
            "usage_estimated": carried.estimated,
            "last_seq": env.seq,
        }
        try:
            await p.journal.commit(env, partial(park_run, run_id=self.run_id, parked=row, run_values=values))
        except StorageError as exc:
            return Outcome("failed", error_code="storage_error", error_message=str(exc))
        pending.announced = True
        # no await from here to the task's end: an answer or a cancel that comes for the run from now
        # on finds it parked (``parked``) and goes to its row; one that came while the park was being
        # written was for this execution, and a cancel ends the run here
        if self.cancel_reason is not None:
            return stopped(p.state, self.cancel_reason)
        self.parked = self.ended = True  # no longer a live run: counted as parked from now on
        if self.on_parked is not None:
            self.on_parked()
        return PARKED

    async def _load_context(self) -> _Context:
        """The conversation's saved team state, or (the team's shape changed) its stored messages; or,
        for a parked run that was answered, its parked row; or, for a run taken again after a crash,
        where it resumes from."""
        p = self.parts
        p.humans.parkable = parkable(p.state.spec)
        if p.state.new_conversation:
            return _Context()  # no messages yet, no saved state (base_position stays 0)
        async with p.deps.read_sessionmaker() as session:
            conversation = await ConversationRepository(session).for_update(self.conversation_id)
            assert conversation is not None
            p.messages.base_position = conversation.message_count
            if p.humans.parkable and (row := await session.get(ParkedRun, self.run_id)) is not None and row.answer:
                carried = Carried.from_json(row.carry)
                self._carry_over(carried)
                if row.kind != "approval":
                    return _Context(parked=row)
                point = await self._resume_point(session, conversation.message_count, row.state, carried)
                return _Context(parked=row, resume=point)
            if p.state.started:
                return _Context(resume=await self._crash_point(session, conversation.message_count))
            if conversation.state is not None and conversation.state_signature == team_signature(p.state.spec):
                return _Context(state=conversation.state)
            if conversation.message_count:
                return _Context(history=await MessageRepository(session).history(self.conversation_id))
            return _Context()

    async def _crash_point(self, session: AsyncSession, message_count: int) -> ResumePoint:
        """Where a run taken again after its process died resumes: its checkpoint, if a turn had ended."""
        checkpoint = await session.get(RunCheckpoint, self.run_id)
        if checkpoint is None:
            return await self._resume_point(session, message_count, None, None)
        since = replace(Carried.from_json(checkpoint.carry), checkpoint_seq=checkpoint.seq)
        self._carry_over(since)
        return await self._resume_point(session, message_count, checkpoint.state, since)

    async def _resume_point(
        self, session: AsyncSession, message_count: int, state: dict[str, Any] | None, carried: Carried | None
    ) -> ResumePoint:
        """Where a run resumes mid-way: the team's ``state`` after its last whole turn (``carried``: what the
        run had used by then, and that turn's last event; no state: from its task), the turn interrupted
        after it (from the log), and what the run has stored and billed."""
        p = self.parts
        seq = carried.checkpoint_seq if carried is not None and state is not None else None
        # a team that keeps no checkpoint (a graph) starts over: no turn of it is played again
        replayed = parkable(p.state.spec)
        events = await RunEventRepository(session).of_types(self.run_id, REPLAY_TYPES, seq or 0) if replayed else []
        own = await MessageRepository(session).of_run(self.run_id)
        usage = RunQueueRepository(session)
        stored, prompt, completion, estimated = await usage.usage(self.run_id)
        # the interrupted turn may have stored a thought after the checkpoint: count what is stored
        p.messages.base_position = message_count - stored
        p.messages.count = stored
        ledger = p.ledger
        ledger.prompt_tokens, ledger.completion_tokens, ledger.estimated = prompt, completion, estimated
        ledger.by_model = await usage.usage_by_model(self.run_id)  # the calls recorded before
        history: list[Message] = []
        if seq is None:
            earlier = await MessageRepository(session).history(self.conversation_id)
            history = [m for m in earlier if m.run_id != self.run_id]
        return ResumePoint(
            state if seq is not None else None, seq, carried, turn_replay(events), history, own[0].id if own else None
        )

    def _carry_over(self, carried: Carried) -> None:
        """A resumed run goes on from what it had: its messages, its usage, its time."""
        p = self.parts
        p.messages.base_position -= carried.stored  # the conversation's count includes the run's own
        p.messages.count = carried.stored
        p.messages.result = carried.result
        ledger = p.ledger
        ledger.prompt_tokens, ledger.completion_tokens = carried.prompt_tokens, carried.completion_tokens
        ledger.estimated = carried.estimated
        ledger.by_model = {model: (pt, ct) for model, (pt, ct) in carried.by_model.items()}
        self.active_before = carried.active_s

    async def _flush_held(self) -> None:
        """A step's message still held when the run ends (cancelled, failed): stored before its end."""
        try:
            await self.parts.messages.flush()
        except StorageError:
            log.error("run_message_lost", run_id=self.run_id)

    def _parked(self) -> None:
        """The run parked: no process holds it now; its watchers read on from storage."""
        self.ended = True
        deps = self.parts.deps
        deps.recorder.release_lease(self.run_id)
        deps.bus.detach(self.run_id, quiet=True)
        log.info("run_parked", run_id=self.run_id, kind=self.parts.humans.parked_kind)

    async def _finish(self, outcome: Outcome) -> None:
        self.settling = True
        try:
            if self.parts.messages.held is not None:
                await self._flush_held()
            await settle(self.parts, outcome, self.started_at)
        finally:
            self.ended = True
            self.parts.deps.recorder.release_lease(self.run_id)


def needs_approval(spec: ResolvedTeamSpec, tools: ToolRegistry) -> bool:
    """Whether a call of some tool of the team's agents waits for a person's approval."""
    return any(m.approve_tools or any(tools.requires_approval(t) for t in m.tools) for m in spec.members)


def _unparked(rows: Rows, run_id: str, attempts: int, conn: Connection) -> None:
    """A parked run resumes: its row goes (``unpark_run``), with the rows of the message stored with it."""
    unpark_run(conn, run_id, attempts)
    for stmt, params in rows.executions:
        conn.execute(stmt, params)
