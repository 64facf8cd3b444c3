"""`/v1/runs`: start, stream, wait for, list, read and cancel runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from app.api.deps import PrincipalDep, ServicesDep, SessionDep
from app.api.services import Services
from app.auth.service import Principal
from app.core.envelope import format_at
from app.core.errors import problem_responses
from app.core.openapi import event_stream_content
from app.core.schemas import ListPage
from app.runs.event_schemas import EVENT_TYPES
from app.runs.models import Run
from app.runs.repository import RunEventRepository, RunRepository
from app.runs.schemas import (
    EventEnvelope,
    EventPage,
    InputCreate,
    RunCreate,
    RunError,
    RunRead,
    RunResult,
    RunStatus,
    Usage,
)
from app.runs.service import RunService
from app.runs.sse import EventStream, event_stream, parse_last_event_id

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


@router.post(
    "",
    name="create_run",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a run in the background",
    responses=problem_responses(400, 404, 409, 413, 422, 429, 503),
)
async def create_run(
    body: RunCreate, response: Response, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> RunRead:
    run = await RunService(session, principal, services).create(body)
    response.headers["Location"] = f"/v1/runs/{run.id}"
    return to_read(run)


@router.post(
    "/stream",
    name="create_run_stream",
    summary="Start a run and stream its events (SSE)",
    response_class=EventStream,
    responses={**SSE_RESPONSE, **problem_responses(400, 404, 409, 413, 422, 429, 503)},
)
async def create_run_stream(
    body: RunCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> EventStream:
    runs = RunService(session, principal, services)
    run = await runs.create(body)
    await session.close()  # never hold a request's session across a stream
    known = [runs.queued] if runs.queued is not None else None
    return event_stream(services, run.id, 0, headers={"Content-Location": f"/v1/runs/{run.id}"}, known=known)


@router.post(
    "/wait",
    name="create_run_wait",
    summary="Start a run and wait until it finishes",
    responses=problem_responses(400, 404, 409, 413, 422, 429, 503),
)
async def create_run_wait(
    body: RunCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> RunRead:
    run = await RunService(session, principal, services).create(body)
    await session.close()
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


@router.get(
    "/{run_id}/events",
    name="stream_run_events",
    summary="Replay and follow a run's events (SSE), or read a page of them (JSON)",
    description=(
        "With `Accept: text/event-stream` (the default): every event after `Last-Event-ID` (or `after`), then "
        "live ones until the terminal event. With `Accept: application/json`: one page of stored events."
    ),
    responses={
        200: {
            "description": "An SSE stream of events, or a page of them as JSON.",
            "content": {
                "text/event-stream": event_stream_content(EVENT_TYPES),
                "application/json": {"schema": {"$ref": "#/components/schemas/EventPage"}},
            },
        },
        **problem_responses(404),
    },
    response_model=None,
)
async def stream_run_events(
    run_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, description="Return events with a greater seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="JSON pages only: the page size.")] = 500,
    last_event_id: Annotated[str | None, Header(description="Resume after this seq (SSE).")] = None,
) -> EventStream | EventPage:
    await RunRepository(session).get(principal.id, run_id)
    resume = parse_last_event_id(last_event_id)
    start = resume if resume is not None else after
    accept = request.headers.get("accept", "")
    if "application/json" in accept and "text/event-stream" not in accept:
        events, last = await RunEventRepository(session).after(run_id, start, limit=limit + 1)
        page = events[:limit]
        return EventPage(
            data=[
                EventEnvelope(run_id=e.run_id, seq=e.seq, type=e.type, at=format_at(e.at), data=e.data) for e in page
            ],
            last_seq=page[-1].seq if page else start,
            has_more=len(events) > limit or not last,
        )
    await session.close()
    return event_stream(services, run_id, start)


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
        "on. A `request_id` other than the awaited one is a 409 `unknown_input_request`; a run that is not "
        "waiting is a 409 `not_awaiting_input`."
    ),
    responses=problem_responses(404, 409, 422),
)
async def provide_run_input(
    run_id: str, body: InputCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> RunRead:
    return to_read(await RunService(session, principal, services).provide_input(run_id, body))
