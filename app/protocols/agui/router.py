"""`/agui/teams/{team}`: a stored team as an AG-UI agent, its runs streamed as AG-UI events.

A request starts an ordinary run through ``RunService`` (limits, ownership and idempotency as on
``/v1/runs``) and follows its event log with ``follow_batches``, as ``/v1/runs/{id}/events`` does;
the translator turns each batch of envelopes into one write of AG-UI frames. The thread is our
conversation (its id is the ``threadId``, made on first use and owned by the caller); the AG-UI
``runId`` is kept as the run's Idempotency-Key (``agui:<runId>``), so a POST repeated with the same
``runId`` streams the same run again from its start instead of starting another, and
``GET .../runs/{runId}`` reconnects to it: the thread's completed messages as a snapshot, then the run
on from there. A client that closes the stream leaves the run going: ``POST .../runs/{runId}/cancel``
stops it. A run that asks
a person ends its AG-UI stream with an interrupt; the next request on the thread answers it with
``resume[]`` and streams the same run on from there.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import orjson
from ag_ui.core import CustomEvent, ResumeEntry, RunAgentInput, RunErrorEvent, RunStartedEvent
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import PrincipalDep, ServicesDep, SessionDep
from app.api.services import Services
from app.auth.service import Principal
from app.conversations.models import Conversation
from app.conversations.repository import ConversationRepository, MessageRepository
from app.core.db import utcnow
from app.core.envelope import DELTA, Envelope
from app.core.errors import AppError, Conflict, InvalidSpec, NotFound, problem_responses
from app.protocols.agui.schemas import IDEMPOTENCY_PREFIX, AguiRunAgentInput, capabilities, check_ids, task_of
from app.protocols.agui.translator import CUSTOM_PREFIX, Translator, frame, frames, interrupt_id
from app.runs.models import Run
from app.runs.repository import RunEventRepository, RunRepository
from app.runs.schemas import InputCreate, RunCreate
from app.runs.service import RunService
from app.runs.sse import SSE_HEADERS, EventStream
from app.runtime.streams import StreamClosing
from app.teams.models import Team
from app.teams.repository import TeamRepository

TAG = {"name": "ag-ui", "description": "AG-UI (`ag-ui-protocol` 1.0): a team as an AG-UI agent (docs/protocols.md)."}
router = APIRouter(prefix="/agui/teams", tags=[TAG["name"]])

TeamRef = Annotated[str, Path(description="A stored team, by id or name.", examples=["demo"])]

AGUI_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "AG-UI events as Server-Sent Events (`data: <event JSON>`), from `RUN_STARTED` to `RUN_FINISHED` or "
            "`RUN_ERROR`; `: ping` comments keep an idle stream open. The mapping is in docs/protocols.md."
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **problem_responses(400, 404, 409, 413, 422, 429, 503),
}


# the protocol's own document describes it (docs.ag-ui.com/concepts/capabilities); not repeated here
CAPABILITIES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "AgentCapabilities",
    "description": "AG-UI's AgentCapabilities, camelCase: identity, transport, tools, multiAgent, humanInTheLoop, ...",
    "additionalProperties": {"description": "A category of capabilities, as AG-UI 1.0 defines it."},
}


async def _team(session: SessionDep, principal: Principal, ref: str) -> Team:
    return await TeamRepository(session).get_by_id_or_name(principal.id, ref)


async def _open_thread(session: AsyncSession, principal: Principal, thread_id: str, team: Team, title: str) -> bool:
    """The thread's conversation, made (and committed) now if this is its first run (True then); another
    principal's is a 404. In the request's own session: SQLite has one writer, and the request holds it."""
    conversations = ConversationRepository(session)
    try:
        await conversations.get(principal.id, thread_id)
        return False
    except NotFound:
        pass
    try:
        await conversations.add(
            Conversation.started(
                id=thread_id, principal_id=principal.id, title=title.strip()[:80], team_id=team.id, at=utcnow()
            )
        )
        await session.commit()
        return True
    except (Conflict, IntegrityError):
        await session.rollback()
        # made meanwhile by this principal's other request, or the id is another principal's
        await conversations.get(principal.id, thread_id)
        return False


async def _close_empty_thread(session: AsyncSession, principal: Principal, thread_id: str) -> None:
    """A thread this request made for a run that was refused (a limit): it goes, unless a run has come
    into it meanwhile (another request on the same thread)."""
    await session.rollback()
    if await RunRepository(session).in_conversation(thread_id):
        return
    conversations = ConversationRepository(session)
    await conversations.delete(await conversations.get(principal.id, thread_id))
    await session.commit()


async def _agui_frames(
    services: Services, run_id: str, translate: Translator, known: list[Envelope] | None, after: int = 0
) -> AsyncGenerator[bytes, None]:
    async for item in services.follow(run_id, after, known):
        if isinstance(item, list):
            yield frames(translate, item)
            if translate.finished:
                return  # the run ended, or paused for a person: AG-UI's run is over
        elif isinstance(item, StreamClosing):
            # the server is stopping: no AG-UI terminal event, so the client knows to come back
            notice = {"runId": translate.run_id, "reason": item.reason}
            yield frame(CustomEvent(name=CUSTOM_PREFIX + "stream_closing", value=notice))
        # StreamLagged: the watcher is re-attached from storage and misses nothing; AG-UI need not know


@router.post(
    "/{team_ref}",
    name="agui_run",
    summary="Run a team as an AG-UI agent (SSE)",
    description=(
        "Takes AG-UI's `RunAgentInput`: `threadId` is the conversation (made on first use), `runId` names the "
        "run (repeated, it streams the same run again), and the last of `messages` is the new user turn. "
        "A run that needs a person ends the stream with `RUN_FINISHED` `outcome: interrupt`; `resume[]` in the "
        "next input answers it and streams the run on. Closing the stream does not stop the run; "
        "`POST /agui/teams/{team}/runs/{runId}/cancel` does."
    ),
    response_class=EventStream,
    responses=AGUI_STREAM,
    response_model=None,
)
async def agui_run(
    team_ref: TeamRef, request: AguiRunAgentInput, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> EventStream:
    body = request.official()
    check_ids(body)
    team = await _team(session, principal, team_ref)
    if body.resume:
        return await _resume(body, session, principal, services)
    task = task_of(body, services.settings.max_task_chars)  # before the thread is made: a refusal makes nothing
    made = await _open_thread(session, principal, body.thread_id, team, task)
    key = IDEMPOTENCY_PREFIX + body.run_id
    paused = [
        r for r in await RunRepository(session).active_in_conversation(body.thread_id) if r.status == "awaiting_input"
    ]
    if paused and paused[0].idempotency_key != key:  # not a repeat of the paused run's own request
        await session.close()
        message = f"The thread's run is waiting for an answer: resume interrupt(s) of run '{paused[0].id}' first."
        return _refused(services, body, "interrupt_pending", message)
    runs = RunService(session, principal, services)
    try:
        create = RunCreate(team_id=team.id, task=task, conversation_id=body.thread_id)
        run = await runs.create(create, idempotency_key=key)
    except AppError:
        if made:  # refused (a limit): the request leaves no empty thread behind
            await _close_empty_thread(session, principal, body.thread_id)
        raise
    # a repeated runId is a reconnect: what the thread said before this run, then the run from its start
    history = (await _history(session, run, 0))[0] if runs.replayed else None
    await session.close()  # never hold a request's session across a stream
    known = [runs.queued] if runs.queued is not None else None
    return _stream(services, run.id, Translator(body.thread_id, body.run_id, history), known=known)


def _stream(
    services: Services, run_id: str, translate: Translator, *, known: list[Envelope] | None = None, after: int = 0
) -> EventStream:
    settings = services.settings
    return EventStream(
        _agui_frames(services, run_id, translate, known, after),
        ping=settings.sse_ping_s,
        sep="\r\n",
        send_timeout=settings.sse_send_timeout_s,
        headers={**SSE_HEADERS, "Content-Location": f"/v1/runs/{run_id}"},
    )


def _refused(services: Services, body: RunAgentInput, code: str, message: str) -> EventStream:
    """An AG-UI run refused in AG-UI's terms, as the spec has it for input it cannot take: ``RUN_ERROR``."""
    at = int(time.time() * 1000)

    async def events() -> AsyncGenerator[bytes, None]:
        started = RunStartedEvent(thread_id=body.thread_id, run_id=body.run_id, protocol_version="1.0", timestamp=at)
        yield frame(started) + frame(RunErrorEvent(message=message, code=code, timestamp=at))

    settings = services.settings
    return EventStream(
        events(), ping=settings.sse_ping_s, sep="\r\n", send_timeout=settings.sse_send_timeout_s, headers=SSE_HEADERS
    )


async def _resume(body: RunAgentInput, session: AsyncSession, principal: Principal, services: Services) -> EventStream:
    """Answer the interrupts of the thread's paused run (``resume[]``) and stream it on from where it paused.

    Every open interrupt must be answered; a ``resume`` that was already applied answers nothing again
    and streams the same events (replaying it is harmless)."""
    await ConversationRepository(session).get(principal.id, body.thread_id)
    assert body.resume
    answers: dict[str, ResumeEntry] = {}
    run_ids: set[str] = set()
    for entry in body.resume:
        run_id, _, request_id = entry.interrupt_id.partition("/")
        run_ids.add(run_id)
        answers[request_id] = entry
    run = await _interrupted_run(session, principal, body.thread_id, run_ids)
    requested, received = await _input_requests(session, run.id) if run else ({}, set())
    if run is None or not set(answers) <= set(requested):
        await session.close()
        return _refused(services, body, "unknown_interrupt", "`resume` names an interrupt this thread never had.")
    open_now = [rid for rid in requested if rid not in received]
    if run.status == "awaiting_input":
        unanswered = [rid for rid in open_now if rid not in answers]
        if unanswered:
            await session.close()
            ids = ", ".join(interrupt_id(run.id, rid) for rid in unanswered)
            return _refused(services, body, "interrupt_unanswered", f"Every open interrupt must be answered: {ids}.")
        runs = RunService(session, principal, services)
        for rid in open_now:
            entry = answers[rid]
            if entry.status == "cancelled":
                await runs.cancel(run.id)
                break
            await runs.provide_input(run.id, _answer(rid, entry.payload))
    after = min(requested[rid] for rid in answers)  # from the first interrupt answered, whatever came since
    history, spent = await _history(session, run, after)
    await session.close()
    translator = Translator(body.thread_id, body.run_id, history, spent, resumed=True)
    return _stream(services, run.id, translator, after=after)


def _answer(request_id: str, payload: Any) -> InputCreate:
    """A ``resume[]`` entry's payload as our answer: a decision (an object with ``decision``: a tool
    approval's, ``DECISION_SCHEMA``), else text (a string as is, other JSON as its text)."""
    if isinstance(payload, dict) and "decision" in payload:
        try:
            return InputCreate.model_validate(
                {
                    "request_id": request_id,
                    "decision": payload["decision"],
                    "arguments": payload.get("arguments"),
                    "content": payload.get("reason"),
                }
            )
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
            raise InvalidSpec.at(
                ["body", "resume", "payload"], f"The decision does not fit: {problem}.", code="invalid_decision"
            ) from None
    content = payload if isinstance(payload, str) else "" if payload is None else orjson.dumps(payload).decode()
    return InputCreate(request_id=request_id, content=content)


async def _history(session: AsyncSession, run: Run, after: int) -> tuple[list[tuple[str, str, str]], tuple[int, int]]:
    """The thread's messages before a stream of ``run`` that starts after seq ``after``: the earlier runs',
    and the run's own up to ``after`` (none of the runs that came after it); and the prompt and
    completion tokens the run's own spent."""
    messages = await MessageRepository(session).history(run.conversation_id)
    own = [m for m in messages if m.run_id == run.id and m.seq <= after]
    spent = (sum(m.prompt_tokens for m in own), sum(m.completion_tokens for m in own))
    history = [
        (m.id, m.agent, m.content)
        for m in messages
        if (m.seq <= after if m.run_id == run.id else m.created_at < run.created_at)
    ]
    return history, spent


async def _interrupted_run(
    session: AsyncSession, principal: Principal, thread_id: str, run_ids: set[str]
) -> Run | None:
    """The run the interrupts belong to: one run, the caller's, in this thread."""
    if len(run_ids) != 1:
        return None
    try:
        run = await RunRepository(session).get(principal.id, run_ids.pop())
    except NotFound:
        return None
    return run if run.conversation_id == thread_id else None


async def _input_requests(session: AsyncSession, run_id: str) -> tuple[dict[str, int], set[str]]:
    """The run's input requests (their seqs) and those answered, from its stored log. A request left open
    by an attempt that was lost (before the run's last ``run.requeued``) counts as answered: the resumed
    run asks again if it still needs to."""
    events, _ = await RunEventRepository(session).after(run_id, 0, limit=1_000_000)
    requeued = max((e.seq for e in events if e.type == "run.requeued"), default=0)
    requested = {e.data["request_id"]: e.seq for e in events if e.type == "input.requested"}
    received = {e.data["request_id"] for e in events if e.type == "input.received"}
    received |= {request_id for request_id, seq in requested.items() if seq < requeued}
    return requested, received


@router.post(
    "/{team_ref}/runs/{run_id}/cancel",
    name="agui_cancel",
    summary="Cancel an AG-UI run",
    description="Stops the run started with this AG-UI `runId`; answers with its status once it has settled.",
    responses=problem_responses(404, 409),
)
async def agui_cancel(
    team_ref: TeamRef, run_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> dict[str, str]:
    await _team(session, principal, team_ref)
    run = await RunRepository(session).by_idempotency_key(principal.id, IDEMPOTENCY_PREFIX + run_id)
    if run is None:
        raise NotFound(f"No AG-UI run '{run_id}'.", code="run_not_found")
    cancelled = await RunService(session, principal, services).cancel(run.id)
    return {"threadId": cancelled.conversation_id, "runId": run_id, "status": cancelled.status}


@router.get(
    "/{team_ref}/runs/{run_id}",
    name="agui_reconnect",
    summary="Reconnect to an AG-UI run (SSE)",
    description=(
        "Streams the run started with this AG-UI `runId` again, live or over, without a new input: "
        "`RUN_STARTED`, a `MESSAGES_SNAPSHOT` of every message of the thread completed so far, then the run "
        "on from its last completed message, so a client that replaces its messages with the snapshot has "
        "each message once. Another principal's run is a 404."
    ),
    response_class=EventStream,
    responses={**AGUI_STREAM, **problem_responses(404)},
    response_model=None,
)
async def agui_reconnect(
    team_ref: TeamRef, run_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> EventStream:
    await _team(session, principal, team_ref)
    run = await RunRepository(session).by_idempotency_key(principal.id, IDEMPOTENCY_PREFIX + run_id)
    if run is None:
        raise NotFound(f"No AG-UI run '{run_id}'.", code="run_not_found")
    after = await _reconnect_point(session, run.id)
    history, spent = await _history(session, run, after)
    await session.close()
    return _stream(services, run.id, Translator(run.conversation_id, run_id, history, spent), after=after)


async def _reconnect_point(session: AsyncSession, run_id: str) -> int:
    """Where a reconnect picks the run up: after its last completed message, but before the first delta of
    any message not completed by then (chain branches overlap), so each message is in the snapshot or
    streamed whole after it, never cut in two."""
    events, _ = await RunEventRepository(session).after(run_id, 0, limit=1_000_000)
    first: dict[str, int] = {}  # a message's first delta
    completed: dict[str, int] = {}
    for e in events:
        if e.type == DELTA:
            first.setdefault(e.data["message_id"], e.seq)
        elif e.type == "message.completed":
            completed[e.data["message_id"]] = e.seq
    after = max(completed.values(), default=0)
    while True:
        cut = [seq for mid, seq in first.items() if seq <= after < completed.get(mid, after + 1)]
        if not cut:
            return after
        after = min(cut) - 1


@router.get(
    "/{team_ref}/capabilities",
    name="agui_capabilities",
    summary="The team's AG-UI capabilities",
    description="AG-UI's `AgentCapabilities`: what `getCapabilities()` of an AG-UI client returns for this team.",
    responses={200: {"content": {"application/json": {"schema": CAPABILITIES_SCHEMA}}}, **problem_responses(404)},
)
async def agui_capabilities(team_ref: TeamRef, session: SessionDep, principal: PrincipalDep) -> JSONResponse:
    team = await _team(session, principal, team_ref)
    members = [m if isinstance(m, str) else str(m.get("name")) for m in team.spec.get("members", [])]
    described = capabilities(team.name, str(team.spec.get("description") or ""), members)
    return JSONResponse(described.model_dump(mode="json", by_alias=True))


@router.get(
    "/{team_ref}/health",
    name="agui_health",
    summary="Whether the team can be run over AG-UI",
    responses=problem_responses(404),
)
async def agui_health(team_ref: TeamRef, session: SessionDep, principal: PrincipalDep) -> dict[str, str]:
    team = await _team(session, principal, team_ref)
    return {"status": "ok", "agent": team.name, "protocol": "ag-ui", "protocolVersion": "1.0"}
