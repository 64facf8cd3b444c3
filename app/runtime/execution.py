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
from dataclasses import dataclass
from typing import Any

import structlog
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, TextMessage
from autogen_core import CancellationToken
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.conversations.models import Conversation, Message
from app.conversations.repository import ConversationRepository, MessageRepository
from app.core.db import utcnow
from app.core.settings import Settings
from app.engine.events import (
    CompletedMessage,
    completed_message,
    handoff_data,
    is_stored_message,
    message_completed_data,
    translate_event,
)
from app.engine.factory import TeamFactory, team_signature
from app.engine.providers import ModelConfigError
from app.runs.models import Run
from app.runs.repository import RunEventRepository, RunRepository
from app.runtime.bus import EventBus
from app.runtime.envelope import DELTA, Envelope
from app.runtime.recorder import Apply, EventRecorder, StorageError
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
    """The error text a client may see: the root cause's message, bounded."""
    text = str(exc).strip() or type(exc).__name__
    if "Traceback" in text:
        # AutoGen wraps agent errors as a RuntimeError carrying a formatted traceback; keep its last line
        text = text.strip().splitlines()[-1]
    return text[:500]


class RunExecution:
    def __init__(self, deps: RuntimeDeps, run: Run) -> None:
        self.deps = deps
        self.run_id = run.id
        self.conversation_id = run.conversation_id
        self.principal_id = run.principal_id
        self.task_text = run.task
        self.timeout_s = run.timeout_s
        self.created_at = run.created_at
        self.spec = ResolvedTeamSpec.model_validate(run.team_spec)
        self.agent_names = frozenset(m.name for m in self.spec.members)
        self.token = CancellationToken()
        self.cancel_reason: str | None = None
        self.cancel_event = asyncio.Event()
        self.seq = 0
        self.started_at: float | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.message_count = 0
        self.base_position = 0
        self.result: dict[str, Any] | None = None

    # -- control ---------------------------------------------------------------------------------

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.token.cancel()
            self.cancel_event.set()

    # -- events ----------------------------------------------------------------------------------

    def _envelope(self, type_: str, data: dict[str, Any]) -> Envelope:
        self.seq += 1
        return Envelope(self.run_id, self.seq, type_, utcnow(), data)

    async def _commit(self, env: Envelope, apply: Apply | None = None) -> None:
        await self.deps.recorder.commit(env, apply)
        self.deps.bus.publish(env)

    async def _emit(self, type_: str, data: dict[str, Any]) -> None:
        await self._commit(self._envelope(type_, data))

    def _delta(self, data: dict[str, Any]) -> None:
        env = self._envelope(DELTA, data)
        self.deps.bus.publish(env)
        self.deps.recorder.record(env)

    # -- the run ---------------------------------------------------------------------------------

    async def execute(self, turn: asyncio.Lock) -> None:
        async with self.deps.read_sessionmaker() as session:
            self.seq = await RunEventRepository(session).max_seq(self.run_id)
        outcome: Outcome
        try:
            if not await self._wait_turn(turn):
                outcome = Outcome("cancelled", stop_reason=self.cancel_reason)
            else:
                try:
                    outcome = await self._run()
                finally:
                    turn.release()
        except asyncio.CancelledError:
            # the task itself was cancelled (a hard stop): settle the run, then let the cancellation go on
            self.token.cancel()
            await asyncio.shield(self._finish(Outcome("cancelled", stop_reason=self.cancel_reason or "shutdown")))
            raise
        except Exception as exc:
            log.error("run_crashed", run_id=self.run_id, exc_info=exc)
            outcome = Outcome("failed", error_code=classify_error(exc), error_message=public_error_text(exc))
        await self._finish(outcome)

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

    async def _run(self) -> Outcome:
        state, history = await self._load_context()
        self.started_at = time.monotonic()
        started = utcnow()

        async def mark_running(session: AsyncSession) -> None:
            await RunRepository(session).set_fields(self.run_id, status="running", started_at=started)

        await self._commit(
            self._envelope("run.started", {"team": self.spec.name, "agents": sorted(self.agent_names)}),
            mark_running,
        )
        log.info("run_started", run_id=self.run_id, team=self.spec.name)
        replayed: set[str] = set()
        task: str | list[BaseChatMessage] = self.task_text
        if history:
            prior = [TextMessage(content=m.content, source=m.agent) for m in history if m.content]
            replayed = {m.id for m in prior}
            task = [*prior, TextMessage(content=self.task_text, source="user")]
        try:
            team = self.deps.factory.build_team(self.spec, history_len=len(replayed))
            if state is not None:
                await team.load_state(state)
        except (ModelConfigError, ValueError) as exc:
            return Outcome("failed", error_code="invalid_spec", error_message=public_error_text(exc))

        timer = asyncio.get_running_loop().call_later(self.timeout_s, self.request_cancel, "timed_out")
        stop_reason: str | None = None
        try:
            async for item in team.run_stream(task=task, cancellation_token=self.token):
                if isinstance(item, TaskResult):
                    stop_reason = item.stop_reason
                elif is_stored_message(item):
                    assert isinstance(item, BaseChatMessage)
                    if item.id not in replayed:
                        await self._store_message(item)
                else:
                    for type_, data in translate_event(item, self.agent_names):
                        if type_ == DELTA:
                            self._delta(data)
                        else:
                            await self._emit(type_, data)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or self.cancel_reason is None:
                raise
            status = "timed_out" if self.cancel_reason == "timed_out" else "cancelled"
            if status == "timed_out":
                return Outcome(
                    status,
                    error_code="timed_out",
                    error_message=f"The run exceeded its time limit of {self.timeout_s:g} s.",
                )
            return Outcome(status, stop_reason=self.cancel_reason)
        except StorageError as exc:
            self.token.cancel()
            return Outcome("failed", error_code="storage_error", error_message=str(exc))
        except Exception as exc:
            self.token.cancel()
            log.warning("run_failed", run_id=self.run_id, error=public_error_text(exc))
            return Outcome("failed", error_code=classify_error(exc), error_message=public_error_text(exc))
        finally:
            timer.cancel()
        if self.cancel_reason is not None:
            return Outcome("cancelled", stop_reason=self.cancel_reason)
        return Outcome("succeeded", stop_reason=stop_reason, state=dict(await team.save_state()))

    async def _load_context(self) -> tuple[dict[str, Any] | None, list[Message]]:
        async with self.deps.read_sessionmaker() as session:
            conversation = await ConversationRepository(session).for_update(self.conversation_id)
            assert conversation is not None
            self.base_position = conversation.message_count
            if conversation.state is not None and conversation.state_signature == team_signature(self.spec):
                return conversation.state, []
            if conversation.message_count:
                return None, await MessageRepository(session).history(self.conversation_id)
            return None, []

    async def _store_message(self, message: BaseChatMessage) -> None:
        m = completed_message(message)
        self.message_count += 1
        position = self.base_position + self.message_count
        self.prompt_tokens += m.prompt_tokens
        self.completion_tokens += m.completion_tokens
        if m.agent != "user":
            self.result = {"message_id": m.id, "agent": m.agent, "text": m.text}
        env = self._envelope("message.completed", message_completed_data(m, position))
        await self._commit(env, self._message_writer(m, position, env.seq))
        if isinstance(message, HandoffMessage):
            await self._emit("handoff", handoff_data(message))

    def _message_writer(self, m: CompletedMessage, position: int, seq: int) -> Apply:
        async def write(session: AsyncSession) -> None:
            MessageRepository(session).add(
                Message(
                    id=m.id,
                    conversation_id=self.conversation_id,
                    run_id=self.run_id,
                    principal_id=self.principal_id,
                    position=position,
                    seq=seq,
                    agent=m.agent,
                    type=m.type,
                    content=m.text,
                    payload=m.payload,
                    prompt_tokens=m.prompt_tokens,
                    completion_tokens=m.completion_tokens,
                )
            )
            await ConversationRepository(session).bump_messages(self.conversation_id, 1)

        return write

    async def _finish(self, outcome: Outcome) -> None:
        finished = utcnow()
        duration_ms = int((time.monotonic() - self.started_at) * 1000) if self.started_at else 0
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
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
        env = self._envelope(type_, data)
        signature = team_signature(self.spec)

        async def settle(session: AsyncSession) -> None:
            await RunRepository(session).set_fields(
                self.run_id,
                status=outcome.status,
                finished_at=finished,
                stop_reason=outcome.stop_reason if outcome.status != "failed" else None,
                error_code=outcome.error_code,
                error_message=outcome.error_message,
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                message_count=self.message_count,
                last_seq=env.seq,
                result=self.result,
            )
            conversation = await session.get(Conversation, self.conversation_id)
            if conversation is not None:
                # a team that did not finish cleanly is not trusted to continue from: the next run
                # rebuilds its context from the stored messages instead
                conversation.state = outcome.state
                conversation.state_signature = signature if outcome.state is not None else None
                conversation.updated_at = finished

        try:
            await self.deps.recorder.commit(env, settle)
        except StorageError:
            log.error("run_settle_failed", run_id=self.run_id)
        self.deps.bus.publish(env)
        log.info(
            "run_finished",
            run_id=self.run_id,
            status=outcome.status,
            error_code=outcome.error_code,
            duration_ms=duration_ms,
            messages=self.message_count,
        )
