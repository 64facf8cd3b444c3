"""Starting and cancelling runs: validation, admission per conversation, hand-off to the run manager."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.repository import AgentRepository
from app.auth.service import Principal
from app.conversations.models import Conversation
from app.conversations.repository import ConversationRepository
from app.core.db import utcnow
from app.core.errors import Conflict, InvalidSpec, Unavailable
from app.core.ids import new_id
from app.core.repository import Execution, commit_inserts, new_row
from app.core.services import Services
from app.runs.models import Run
from app.runs.repository import TERMINAL_STATUSES, RunRepository, event_insert
from app.runs.schemas import InputCreate, RunCreate
from app.runtime.envelope import Envelope
from app.runtime.inputs import NotAwaitingInput, UnknownInputRequest
from app.runtime.recorder import Rows, StorageError
from app.teams.repository import TeamRepository
from app.teams.schemas import ResolvedTeamSpec, TeamSpec
from app.teams.service import SpecValidator, TeamResolver

log = structlog.get_logger(__name__)


async def _whole(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end even when the request is cancelled meanwhile (its client went away):
    rows the database may already hold are never left without their run's task."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        # the step goes on alone; what it raises is logged, not left unretrieved
        task.add_done_callback(_log_failure)
        raise


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("run_start_failed_after_cancel", error=repr(task.exception()))


class RunService:
    def __init__(self, session: AsyncSession, principal: Principal, services: Services) -> None:
        self.session = session
        self.principal = principal
        self.services = services
        self.runs = RunRepository(session)
        self.queued: Envelope | None = None  # the run.queued event of the run ``create`` made

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

    async def create(self, body: RunCreate) -> Run:
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
        team_id, spec = await self._resolve_team(body)
        manager = self.services.runs
        cluster = self.services.cluster
        limits = self.services.limits
        principal_id = self.principal.id
        new_conversation = body.conversation_id is None
        # embedded, a new conversation's rows are written after the lock (below)
        write_after = new_conversation and cluster is None
        async with manager.admission:
            now = utcnow()
            # embedded: every live run is this process's, or pending (admitted, rows being written);
            # distributed: queued runs are in the database only
            live = manager.live_for(principal_id) + manager.pending[principal_id] if cluster is None else None
            await limits.check_start(self.session, principal_id, settings, live=live)
            conversations = ConversationRepository(self.session)
            inserts: list[Execution] = []  # the conversation (when new), the run, its run.queued
            if body.conversation_id is not None:
                conversation = await conversations.get(self.principal.id, body.conversation_id)
                active = await self.runs.active_in_conversation(conversation.id)
                if active and body.if_busy == "reject":
                    raise Conflict(
                        f"Conversation '{conversation.id}' has run '{active[0].id}' going; "
                        "pass if_busy=enqueue or if_busy=interrupt to start anyway.",
                        code="conversation_busy",
                    )
                if body.if_busy == "interrupt":
                    for other in active:
                        await self._cancel_anywhere(other.id, "interrupted")
            else:
                conversation = Conversation.started(
                    id=new_id("conv"),
                    principal_id=self.principal.id,
                    title=body.task.strip()[:80],
                    team_id=team_id,
                    at=now,
                )
                inserts.append(new_row(conversation))
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
                max_attempts=body.retries + 1,
                at=now,
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
            if cluster is not None:
                # distributed, the live count is read from the database: the rows are written before
                # the next request reads it (an executor claims the run from there)
                await self._write(inserts)
            else:
                # what the request read (its team, its conversation) it read on SQLite's one write
                # connection, which the recorder needs: end that transaction first
                if self.session.in_transaction():
                    await self.session.rollback()
                if not write_after:
                    # in an existing conversation the next request's busy check must see this run, and
                    # the conversation's runs start in the order they were asked
                    await _whole(self._write_and_submit(run, inserts, new_conversation=False))
            limits.record_start(principal_id)
            if write_after:
                manager.pending[principal_id] += 1
        if write_after:
            # nobody else can name a conversation that is being created: its rows are written after the
            # lock, the start holding its slot as pending, so a burst of new runs does not commit in turn
            await _whole(self._write_and_submit(run, inserts, new_conversation=True))
        self.queued = queued
        if cluster is not None:
            # queued in the database: an executor (maybe this process) claims it
            await cluster.announce()
        return run

    async def _write_and_submit(self, run: Run, inserts: list[Execution], *, new_conversation: bool) -> None:
        """Embedded: write the run's rows, then start its task. A start in a new conversation holds a
        pending slot (written after the lock), given back here, with its start in the per-minute window
        when nothing was written."""
        principal_id = self.principal.id
        manager = self.services.runs
        try:
            await self._write(inserts)
        except BaseException:
            if new_conversation:
                self.services.limits.forget_start(principal_id)
            raise
        finally:
            if new_conversation:
                manager.release_pending(principal_id)
        # no await since the slot was released: the run is live at once
        manager.submit(run, flushed_seq=1, known_seq=1, new_conversation=new_conversation)

    async def _write(self, inserts: list[Execution]) -> None:
        """Write a new run's rows in one transaction, or raise ``Unavailable`` (nothing written).

        Embedded, they go through the event recorder (SQLite's one writer), without the request's
        session: the rows of runs started together are written in its next transaction, one
        ``executemany`` per table (``Rows`` are executed statement by statement in the order first
        seen, so the conversation comes before its run and the run before its event). Distributed,
        the request's session writes them.
        """
        try:
            if self.services.cluster is None:
                await self.services.recorder.commit(None, Rows(tuple(inserts)))
            else:
                await commit_inserts(self.session, inserts)
        except (StorageError, OperationalError) as exc:
            raise Unavailable(
                "The database could not store the run, so it was not started; try again.",
                code="storage_unavailable",
                headers={"Retry-After": "1"},
            ) from exc

    async def _cancel_anywhere(self, run_id: str, reason: str) -> bool:
        """Ask a run to stop wherever it executes; True when it is live in this process."""
        if self.services.runs.cancel(run_id, reason):
            return True
        if self.services.cluster is not None:
            await self.services.cluster.cancel(run_id, reason)
        return False

    async def provide_input(self, run_id: str, body: InputCreate) -> Run:
        run = await self.runs.get(self.principal.id, run_id)
        limit = self.services.settings.max_input_chars
        if len(body.content) > limit:
            raise InvalidSpec.at(
                ["body", "content"], f"The answer is longer than {limit} characters.", code="input_too_long"
            )
        status = run.status
        # end the transaction first: the run writes `input.received` as soon as it has the answer
        await self.session.rollback()
        if not self.services.runs.provide_input(run_id, body.request_id, body.content):
            cluster = self.services.cluster
            if cluster is None or status in TERMINAL_STATUSES or status == "queued":
                raise NotAwaitingInput(f"Run '{run_id}' is {status}, not waiting for input.")
            # executed by another process: it checks the request id and answers
            verdict = await cluster.provide_input(run_id, body.request_id, body.content)
            if verdict is None:
                raise NotAwaitingInput(f"Run '{run_id}' is {status}, and no executor is waiting on its input.")
            if not verdict.get("ok"):
                error = UnknownInputRequest if verdict.get("code") == UnknownInputRequest.code else NotAwaitingInput
                raise error(str(verdict.get("detail") or "The run is not waiting for that input."))
        return await self.runs.get(self.principal.id, run_id)

    async def cancel(self, run_id: str, *, settle_within: float = 2.0) -> Run:
        run = await self.runs.get(self.principal.id, run_id)
        if run.status == "cancelled":
            return run
        if run.status in TERMINAL_STATUSES:
            raise Conflict(f"Run '{run_id}' has already finished ({run.status}).", code="run_finished")
        # end the transaction first: the run needs the database to settle
        await self.session.rollback()
        manager = self.services.runs
        if await self._cancel_anywhere(run_id, "cancelled"):
            if settle_within > 0:
                await manager.wait(run_id, within=settle_within)
        elif self.services.cluster is not None and settle_within > 0:
            await self._settled_within(run_id, settle_within)
        self.session.expire_all()
        return await self.runs.get(self.principal.id, run_id)

    async def _settled_within(self, run_id: str, within: float) -> None:
        """Wait (a bounded while) for a run that another process executes to reach a terminal state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            async with self.services.read_sessionmaker() as session:
                run = await session.get(Run, run_id)
            if run is None or run.status in TERMINAL_STATUSES:
                return
            await asyncio.sleep(0.05)
