"""`/v1/runs`: start, stream, wait for, list, read and cancel runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import PrincipalDep, ServicesDep, SessionDep
from app.api.services import Services
from app.auth.service import Principal
from app.core.envelope import format_at
from app.core.errors import problem_responses
from app.core.openapi import event_stream_content
from app.core.schemas import ListPage
from app.core.vocabulary import TERMINAL_STATUSES
from app.runs.event_schemas import EVENT_TYPES
from app.runs.models import Run
from app.runs.repository import RunEventRepository, RunRepository
from app.runs.schemas import (
    EventEnvelope,
    EventPage,
    IdempotencyKey,
    InputCreate,
    RunCreate,
    RunError,
    RunRead,
    RunResult,
    RunStatus,
    Usage,
)
from app.runs.service import RunService
from app.runs.sse import MAX_SEQ, EventStream, event_stream, parse_last_event_id

router = APIRouter(prefix="/v1/runs", tags=["runs"])

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-Sent Events: each frame has `id: <seq>`, `event: <type>` and `data: <RunEvent JSON>`; "
            "the stream ends after the terminal event."
        ),
        "content": {"text/event-stream": event_stream_content(EVENT_TYPES)},
    }
}


def to_read(run: Run) -> RunRead:
    return RunRead(
        id=run.id,
        status=run.status,  # type: ignore[arg-type]
        conversation_id=run.conversation_id,
        team_id=run.team_id,
        team_name=run.team_name,
        task=run.task,
        if_busy=run.if_busy,
        timeout_s=run.timeout_s,
        input_timeout_s=run.input_timeout_s,
        metadata=run.meta,
        stop_reason=run.stop_reason,
        error=RunError(code=run.error_code, message=run.error_message or "") if run.error_code else None,
        usage=Usage(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            total_tokens=run.prompt_tokens + run.completion_tokens,
            estimated=run.usage_estimated,
        ),
        message_count=run.message_count,
        last_seq=run.last_seq,
        result=RunResult.model_validate(run.result) if run.result else None,
        attempts=run.attempts or 0,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


async def _fresh(services: Services, principal: Principal, run_id: str) -> Run:
    async with services.read_sessionmaker() as session:
        return await RunRepository(session).get(principal.id, run_id)


# every route that starts a run takes an Idempotency-Key (docs/streaming.md, "Retrying a start")
IdempotencyKeyHeader = Annotated[
    IdempotencyKey | None,
    Header(
        alias="Idempotency-Key",
        description=(
            "A unique string of yours for this start (a UUID, say): 1 to 255 printable ASCII characters, bare "
            "or quoted as in draft-ietf-httpapi-idempotency-key-header. Sent again with the same body within "
            "`SWARM_IDEMPOTENCY_WINDOW_S` (24 h by default), the request starts nothing and answers with the run the "
            "first one started; with another body it is a 422 `idempotency_key_reused`. Keys are per principal."
        ),
    ),
]
REPLAYED = "Idempotent-Replayed"
REPLAYED_HEADER: dict[str, Any] = {
    REPLAYED: {
        "description": "`true` when the answer is the run an earlier request with this Idempotency-Key started.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
START_ANSWERS = problem_responses(400, 404, 409, 413, 422, 429, 503)
RESUMED_AFTER_THE_END: dict[int | str, dict[str, Any]] = {
    204: {
        "description": (
            "The run is over and nothing is stored after the seq resumed after: there is nothing more to "
            "send. A 204 tells an `EventSource` to stop reconnecting."
        )
    }
}


@router.post(
    "",
    name="create_run",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a run in the background",
    description=(
        "Answers 202 with the run, queued; follow it at `/v1/runs/{id}/events`. A repeat with the same "
        "`Idempotency-Key` is answered 202 too, with the first request's run as it is now."
    ),
    responses={202: {"headers": REPLAYED_HEADER}, **START_ANSWERS},
)
async def create_run(
    body: RunCreate,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> RunRead:
    runs = RunService(session, principal, services)
    run = await runs.create(body, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/runs/{run.id}"
    if runs.replayed:
        response.headers[REPLAYED] = "true"
    return to_read(run)


@router.post(
    "/stream",
    name="create_run_stream",
    summary="Start a run and stream its events (SSE)",
    description=(
        "Streams the new run's events from seq 1 to its terminal event. A repeat with the same "
        "`Idempotency-Key` streams the first request's run instead, live or stored: its events after "
        "`Last-Event-ID` (all of them without one), so a client that retries a cut stream resumes it; "
        "a 204 when that run is over and nothing of it comes after `Last-Event-ID`."
    ),
    response_class=EventStream,
    responses={200: {**SSE_RESPONSE[200], "headers": REPLAYED_HEADER}, **RESUMED_AFTER_THE_END, **START_ANSWERS},
    response_model=None,
)
async def create_run_stream(
    body: RunCreate,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="With a repeated `Idempotency-Key`: resume after this seq."),
    ] = None,
) -> Response:
    runs = RunService(session, principal, services)
    run = await runs.create(body, idempotency_key=idempotency_key)
    headers = {"Content-Location": f"/v1/runs/{run.id}"}
    if runs.replayed:
        headers[REPLAYED] = "true"
        # a new run's stream starts at seq 1 whatever the client says; a replayed one where it left off
        start = parse_last_event_id(last_event_id) or 0
        if start and await nothing_after(session, run, start):
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
        await session.close()  # never hold a request's session across a stream
        return event_stream(services, run.id, start, headers=headers)
    await session.close()
    known = [runs.queued] if runs.queued is not None else None
    return event_stream(services, run.id, 0, headers=headers, known=known)


@router.post(
    "/wait",
    name="create_run_wait",
    summary="Start a run and wait until it finishes",
    description="A repeat with the same `Idempotency-Key` waits for the first request's run and answers with it.",
    responses={200: {"headers": REPLAYED_HEADER}, **START_ANSWERS},
)
async def create_run_wait(
    body: RunCreate,
    response: Response,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> RunRead:
    runs = RunService(session, principal, services)
    run = await runs.create(body, idempotency_key=idempotency_key)
    await session.close()
    if runs.replayed:
        response.headers[REPLAYED] = "true"
    # a dropped client does not cancel the run
    await services.launcher.wait_terminal(run.id)
    return to_read(await _fresh(services, principal, run.id))


@router.get("", name="list_runs", summary="List runs, newest first", responses=problem_responses(400))
async def list_runs(
    session: SessionDep,
    principal: PrincipalDep,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    conversation_id: str | None = None,
    team_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ListPage[RunRead]:
    page = await RunRepository(session).list_filtered(
        principal.id,
        limit=limit,
        cursor=cursor,
        status=status_,
        conversation_id=conversation_id,
        team_id=team_id,
    )
    return ListPage(data=[to_read(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/{run_id}", name="get_run", summary="Get a run", responses=problem_responses(404))
async def get_run(run_id: str, session: SessionDep, principal: PrincipalDep) -> RunRead:
    return to_read(await RunRepository(session).get(principal.id, run_id))


AfterSeq = Annotated[int, Query(ge=0, le=MAX_SEQ, description="Return events with a greater seq.")]
EventPageSize = Annotated[int, Query(ge=1, le=1000, description="The page size.")]
# declared here rather than as a FastAPI header: the schema says what a seq is, the route reads it as
# `?after=` is read, and a value that is no integer is a 400 rather than a 422 (see parse_last_event_id)
LAST_EVENT_ID: dict[str, Any] = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": (
        "Resume after this seq: what an `EventSource` sends when it reconnects. Wins over `after`. "
        "A value that is not an integer is a 400 `invalid_last_event_id`."
    ),
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
}


async def _event_page(session: AsyncSession, run_id: str, after: int, limit: int) -> EventPage:
    events, last = await RunEventRepository(session).after(run_id, after, limit=limit + 1)
    page = events[:limit]
    return EventPage(
        data=[EventEnvelope(run_id=e.run_id, seq=e.seq, type=e.type, at=format_at(e.at), data=e.data) for e in page],
        last_seq=page[-1].seq if page else after,
        has_more=len(events) > limit or not last,
    )


async def nothing_after(session: AsyncSession, run: Run, after: int) -> bool:
    """Whether ``run`` is over and nothing of it is stored after seq ``after``: a resume there gets a 204.

    Read in this order, the run then its events: a run's end and its terminal event are written together,
    so a run read as over has its terminal event visible (whatever seq it got: a lost run's jumps ahead).
    """
    return run.status in TERMINAL_STATUSES and await RunEventRepository(session).max_seq(run.id) <= after


@router.get(
    "/{run_id}/events",
    name="stream_run_events",
    summary="Replay and follow a run's events (SSE)",
    description=(
        "Every event after `Last-Event-ID` (or `after`), then live ones until the terminal event. A resume "
        "after the last event of a run that is over is a 204. The stored events as JSON pages are "
        "`list_run_events` (`GET /v1/runs/{run_id}/events/page`); older clients get the same page here "
        "with `Accept: application/json`."
    ),
    response_class=EventStream,
    responses={**SSE_RESPONSE, **RESUMED_AFTER_THE_END, **problem_responses(400, 404, 422)},
    openapi_extra={"parameters": [LAST_EVENT_ID]},
    response_model=None,
)
async def stream_run_events(
    run_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    after: AfterSeq = 0,
    # for `Accept: application/json` (older clients); `list_run_events` documents it
    limit: Annotated[int, Query(ge=1, le=1000, include_in_schema=False)] = 500,
) -> Response:
    run = await RunRepository(session).get(principal.id, run_id)
    resume = parse_last_event_id(request.headers.get("last-event-id"))
    start = resume if resume is not None else after
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/event-stream" not in accept:
        return JSONResponse(jsonable_encoder(await _event_page(session, run_id, start, limit)))
    if start and await nothing_after(session, run, start):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    await session.close()
    return event_stream(services, run_id, start)


@router.get(
    "/{run_id}/events/page",
    name="list_run_events",
    summary="Read a page of a run's stored events (JSON)",
    description=(
        "The stored events with a seq greater than `after`, in order, at most `limit`. While `has_more`, "
        "pass `last_seq` as `after` for the next page."
    ),
    responses=problem_responses(404),
)
async def list_run_events(
    run_id: str, session: SessionDep, principal: PrincipalDep, after: AfterSeq = 0, limit: EventPageSize = 500
) -> EventPage:
    await RunRepository(session).get(principal.id, run_id)
    return await _event_page(session, run_id, after, limit)


@router.post(
    "/{run_id}/cancel",
    name="cancel_run",
    summary="Cancel a run (idempotent)",
    description=(
        "Stops the run through AutoGen's cancellation token; model calls stop and the run ends `cancelled`, "
        "normally within a second. 200 once it has; 202 if it is still stopping. Cancelling a cancelled run "
        "is a no-op; a run that finished otherwise is a 409."
    ),
    responses={202: {"model": RunRead, "description": "Still stopping."}, **problem_responses(404, 409)},
)
async def cancel_run(
    run_id: str, response: Response, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> RunRead:
    run = await RunService(session, principal, services).cancel(run_id)
    if run.status != "cancelled":
        response.status_code = status.HTTP_202_ACCEPTED
    return to_read(run)


@router.post(
    "/{run_id}/input",
    name="provide_run_input",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Answer a run's input request (human in the loop)",
    description=(
        "Answers the `input.requested` event the run is waiting on. The run emits `input.received` and goes "
        "on; a parked run (docs/human-in-the-loop.md) is `queued` until a process takes it up, which the "
        "answer's run may show. A `request_id` other than the awaited one is a 409 `unknown_input_request`; "
        "a second answer to the same request, or one to a run that is not "
        "waiting is a 409 `not_awaiting_input`. In the distributed mode, an answer that cannot reach the "
        "process running the run (Redis down, or no answer from it) is a 503 `signals_unavailable` with "
        "`Retry-After`: nothing was delivered; send it again."
    ),
    responses=problem_responses(404, 409, 422, 503),
)
async def provide_run_input(
    run_id: str, body: InputCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> RunRead:
    return to_read(await RunService(session, principal, services).provide_input(run_id, body))
