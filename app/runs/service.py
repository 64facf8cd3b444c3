"""Starting and cancelling runs: validation, admission per conversation, hand-off to the run launcher.

A start may carry an ``Idempotency-Key``: the key and the SHA-256 of the body are stored on the run,
unique per principal, and a repeat within ``SWARM_IDEMPOTENCY_WINDOW_S`` gets that run back instead of
a new one (``RunService.replayed``). Two first requests with one key race to the unique index; the
loser's rows are not written and it answers with the winner's run.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import NamedTuple

import orjson
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.repository import AgentRepository
from app.api.services import Services
from app.auth.service import Principal
from app.conversations.models import Conversation
from app.conversations.repository import ConversationRepository
from app.core.db import utcnow
from app.core.envelope import Envelope
from app.core.errors import AppError, Conflict, FieldError, InvalidSpec, Unavailable
from app.core.ids import new_id
from app.core.repository import Execution, new_row
from app.core.vocabulary import TERMINAL_STATUSES
from app.runs.answers import answer_text
from app.runs.models import Run
from app.runs.repository import ParkedRepository, RunEventRepository, RunRepository, event_insert
from app.runs.schemas import InputCreate, RunCreate
from app.teams.repository import TeamRepository
from app.teams.schemas import ResolvedTeamSpec, TeamSpec
from app.teams.service import SpecValidator, TeamResolver


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"


class IdempotentStart(NamedTuple):
    key: str
    digest: str  # of the body, as ``request_digest`` makes it


def request_digest(body: RunCreate) -> str:
    """The SHA-256 of a start's body as the server read it (defaults filled in, keys sorted), so that
    the same request sent with other spacing or key order is still the same request."""
    return hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


class RunService:
    def __init__(self, session: AsyncSession, principal: Principal, services: Services) -> None:
        self.session = session
        self.principal = principal
        self.services = services
        self.runs = RunRepository(session)
        self.queued: Envelope | None = None  # the run.queued event of the run ``create`` made
        self.replayed = False  # ``create`` returned the run an earlier request with its Idempotency-Key started

    async def _resolve_team(self, body: RunCreate) -> tuple[str | None, ResolvedTeamSpec]:
        resolver = TeamResolver(
            SpecValidator(self.services.models, self.services.tools),
            AgentRepository(self.session),
            self.principal.id,
        )
        if body.team is not None:
            return None, await resolver.resolve(body.team, ["body", "team"])
        assert body.team_id is not None
        team = await TeamRepository(self.session).get_by_id_or_name(self.principal.id, body.team_id)
        try:
            return team.id, await resolver.resolve(TeamSpec.model_validate(team.spec), ["body", "team_id"])
        except InvalidSpec as exc:
            raise InvalidSpec(
                f"Team '{team.name}' can no longer run: {exc.detail}", code=exc.code, errors=exc.errors
            ) from exc

    def _timeout(self, body: RunCreate) -> float:
        """The run's time limit, once the task and the limit asked for are checked."""
        settings = self.services.settings
        if len(body.task) > settings.max_task_chars:
            raise InvalidSpec.at(
                ["body", "task"],
                f"The task is longer than {settings.max_task_chars} characters.",
                code="task_too_long",
            )
        timeout = body.timeout_s or settings.run_timeout_s
        if timeout > settings.max_run_timeout_s:
            raise InvalidSpec.at(
                ["body", "timeout_s"],
                f"timeout_s may be at most {settings.max_run_timeout_s:g}.",
                code="invalid_timeout",
            )
        return timeout

    async def _conversation(
        self, body: RunCreate, team_id: str | None, now: datetime, inserts: list[Execution]
    ) -> Conversation:
        """The run's conversation (under the admission lock): a new one goes into ``inserts``; an
        existing busy one follows ``if_busy``."""
        if body.conversation_id is None:
            conversation = Conversation.started(
                id=new_id("conv"), principal_id=self.principal.id, title=body.task.strip()[:80], team_id=team_id, at=now
            )
            inserts.append(new_row(conversation))
            return conversation
        conversation = await ConversationRepository(self.session).get(self.principal.id, body.conversation_id)
        active = await self.runs.active_in_conversation(conversation.id)
        if active and body.if_busy == "reject":
            raise Conflict(
                f"Conversation '{conversation.id}' has run '{active[0].id}' going; "
                "pass if_busy=enqueue or if_busy=interrupt to start anyway.",
                code="conversation_busy",
            )
        if (
            active
            and body.if_busy == "enqueue"
            and (waiting := await ParkedRepository(self.session).waiting_in(conversation.id))
        ):
            # a parked run holds no process: a run queued behind it would start before it ends
            raise Conflict(
                f"Conversation '{conversation.id}' has run '{waiting[0]}' waiting for a person; answer or cancel "
                "it first, or pass if_busy=interrupt.",
                code="conversation_waiting",
            )
        if body.if_busy == "interrupt":
            for other in active:
                await self.services.launcher.cancel(other.id, "interrupted")
        return conversation

    async def create(self, body: RunCreate, *, idempotency_key: str | None = None) -> Run:
        """Start a run. With ``idempotency_key``: if an earlier start with that key and the same body made a
        run within the window, return that run instead (``replayed``); another body is a 422."""
        if idempotency_key is None:
            return await self._start(body, None)
        key = IdempotentStart(idempotency_key, request_digest(body))
        earlier = await self._earlier(key)
        if earlier is not None:
            return earlier
        try:
            return await self._start(body, key)
        except (Unavailable, IntegrityError):
            # nothing of this start was written: maybe a concurrent request took the key first
            await self.session.rollback()
            try:
                earlier = await self._earlier(key)
            except SQLAlchemyError:
                earlier = None  # the database is out of reach: the original error says so
            if earlier is None:
                raise
            return earlier

    async def _earlier(self, key: IdempotentStart) -> Run | None:
        """The run started with ``key`` within the window (an expired key is freed); a 422 when that run
        was asked for with another body."""
        async with self.services.read_sessionmaker() as session:
            run = await RunRepository(session).by_idempotency_key(self.principal.id, key.key)
        if run is None:
            return None
        window = timedelta(seconds=self.services.settings.idempotency_window_s)
        if run.created_at <= utcnow() - window:
            await self.runs.forget_idempotency_key(run.id, key.key)
            await self.session.commit()
            return None
        if run.idempotency_hash != key.digest:
            detail = (
                f"This Idempotency-Key started run '{run.id}' with a different request body; "
                "send a new key for a new run."
            )
            loc: list[str | int] = ["header", "Idempotency-Key"]
            raise IdempotencyKeyReused(detail, errors=[FieldError(loc=loc, msg=detail, type="idempotency_key_reused")])
        self.replayed = True
        return run

    async def _start(self, body: RunCreate, key: IdempotentStart | None) -> Run:
        settings = self.services.settings
        timeout = self._timeout(body)
        team_id, spec = await self._resolve_team(body)
        launcher = self.services.launcher
        limits = self.services.limits
        principal_id = self.principal.id
        new_conversation = body.conversation_id is None
        async with launcher.admission:
            # a start with this key written since the look above is found here (a run in an existing
            # conversation is written under this lock: without this look, its conversation would be
            # busy with it); one still on its way (a new conversation's, a replica's) wins at the
            # unique index, and ``create`` answers with it
            if key is not None and (earlier := await self._earlier(key)) is not None:
                return earlier
            now = utcnow()
            await limits.check_start(
                self.session,
                principal_id,
                settings,
                live=launcher.live_for(principal_id),
                parked=launcher.parked_for(principal_id),
            )
            inserts: list[Execution] = []  # the conversation (when new), the run, its run.queued
            conversation = await self._conversation(body, team_id, now, inserts)
            run = Run.queued(
                id=new_id("run"),
                principal_id=self.principal.id,
                conversation_id=conversation.id,
                team_id=team_id,
                team_name=spec.name,
                team_spec=spec.model_dump(mode="json"),
                task=body.task,
                if_busy=body.if_busy,
                timeout_s=timeout,
                input_timeout_s=body.input_timeout_s or settings.input_timeout_s,
                meta=dict(body.metadata),
                max_attempts=(settings.run_retries if body.retries is None else body.retries) + 1,
                at=now,
                idempotency_key=key.key if key else None,
                idempotency_hash=key.digest if key else None,
            )
            inserts.append(new_row(run))
            queued = Envelope(
                run.id,
                1,
                "run.queued",
                run.created_at,
                {"conversation_id": conversation.id, "team": spec.name, "task": body.task},
            )
            inserts.append(event_insert(queued))
            after_admission = await launcher.launch(
                self.session,
                run,
                inserts,
                new_conversation=new_conversation,
                unwritten=lambda: limits.forget_start(principal_id),
            )
            limits.record_start(principal_id)
        # embedded, a start in a new conversation is written now; distributed, the executors are told
        await after_admission()
        self.queued = queued
        return run

    async def provide_input(self, run_id: str, body: InputCreate) -> Run:
        run = await self.runs.get(self.principal.id, run_id)
        # the answer fits the kind of request it answers (an approval takes a decision), or nothing is delivered
        requested = await RunEventRepository(self.session).input_request(run_id, body.request_id)
        content = answer_text(requested, body, self.services.tools)
        limit = self.services.settings.max_input_chars
        if len(content) > limit:
            raise InvalidSpec.at(
                ["body", "content" if body.decision is None else "arguments"],
                f"The answer is longer than {limit} characters.",
                code="input_too_long",
            )
        status = run.status
        # end the transaction first: the run writes `input.received` as soon as it has the answer
        await self.session.rollback()
        await self.services.launcher.provide_input(run_id, body.request_id, content, status=status)
        return await self.runs.get(self.principal.id, run_id)

    async def cancel(self, run_id: str, *, settle_within: float = 2.0) -> Run:
        run = await self.runs.get(self.principal.id, run_id)
        if run.status == "cancelled":
            return run
        if run.status in TERMINAL_STATUSES:
            raise Conflict(f"Run '{run_id}' has already finished ({run.status}).", code="run_finished")
        # end the transaction first: the run needs the database to settle
        await self.session.rollback()
        await self.services.launcher.cancel(run_id, "cancelled", settle_within=settle_within)
        self.session.expire_all()
        return await self.runs.get(self.principal.id, run_id)
