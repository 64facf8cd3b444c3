"""The Responses API under ``/openai/v1/responses``: a response is a run, read from its event log.

A response is an ordinary run, started through ``RunService`` and followed through
``follow_batches``; ``responses_translator.py`` turns its envelopes into the API's events. Its id
is ``resp_<run id>``, so every route finds the run (the principal's own, else a 404) without a
table of its own; the request's options a later read needs (``include_reasoning``, ``background``,
``previous_response_id``) are kept in the run's metadata. A read of the response, streamed or
not, translates the log again from its start: the translator's state is the log's, and the
sequence numbers are derived from the log's seqs, so ``starting_after=N`` gives exactly the events
numbered above ``N``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServicesDep, SessionDep
from app.api.services import Services
from app.core.envelope import Envelope
from app.core.errors import BadRequest, NotFound
from app.protocols.openai.errors import PREFIX, openai_error
from app.protocols.openai.responses_translator import ResponsesTranslator, sse
from app.protocols.openai.runs import PrincipalDep, run_batches, start_run, task_of
from app.protocols.openai.schemas import ChatMessage, InputItem, ResponseCreate
from app.runs.models import Run
from app.runs.repository import RunRepository
from app.runs.service import RunService
from app.runs.sse import SEP, SSE_HEADERS, EventStream
from app.runtime.streams import stored_pages

router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)

RESPONSE_PREFIX = "resp_"
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def response_id(run_id: str) -> str:
    return RESPONSE_PREFIX + run_id


async def owned_run(session: SessionDep, principal_id: str, resp_id: str) -> Run:
    """The run behind a response id; another principal's, or none, is a 404 naming the response."""
    missing = NotFound(f"No response with id '{resp_id}'.", code="response_not_found")
    if not resp_id.startswith(RESPONSE_PREFIX):
        raise missing
    try:
        return await RunRepository(session).get(principal_id, resp_id.removeprefix(RESPONSE_PREFIX))
    except NotFound:
        raise missing from None


def messages_of(body: ResponseCreate) -> list[ChatMessage]:
    """``instructions`` and ``input`` as chat messages (text only)."""
    items = [InputItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    messages = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    for i, item in enumerate(items):
        if item.type != "message" or item.role is None:
            message = f"input[{i}] is a `{item.type}` item: only messages are supported."
            raise BadRequest(message, code="unsupported_input")
        parts = item.content if isinstance(item.content, list) else []
        if (kind := next((p.type for p in parts if p.type not in _TEXT_PARTS), None)) is not None:
            raise BadRequest(f"input[{i}] has a `{kind}` part: only text is supported.", code="unsupported_content")
        text = item.content if isinstance(item.content, str) else "".join(p.text or "" for p in parts)
        messages.append(ChatMessage(role=item.role, content=text))
    if not items:
        raise BadRequest("`input` has no message.", code="invalid_messages")
    return messages


def translator_of(run: Run) -> ResponsesTranslator:
    """The translator of ``run``'s response, with the options its request gave."""
    meta = run.meta or {}
    return ResponsesTranslator(
        response_id(run.id),
        run.team_name,
        int(run.created_at.timestamp()),
        include_reasoning=meta.get("openai.include_reasoning", True) is not False,
        background=bool(meta.get("openai.background", False)),
        previous_response_id=meta.get("openai.previous_response_id"),
        metadata={"swarm_run": run.id, "swarm_conversation": run.conversation_id},
    )


async def _frames(
    services: Services, run_id: str, known: Envelope | None, translator: ResponsesTranslator, after: int
) -> AsyncGenerator[bytes, None]:
    last = after
    async for batch in run_batches(services, run_id, known):
        out: list[bytes] = []
        for env in batch:
            for event in translator.translate(env):
                if event["sequence_number"] > after:
                    out.append(sse(event))
                    last = event["sequence_number"]
        if out:
            yield b"".join(out)
    if not translator.ended:
        message = (
            f"The stream was cut before the run ended; it goes on: GET {PREFIX}/responses/{translator.response_id}."
        )
        error = {
            "type": "error",
            "sequence_number": last + 1,
            "code": "stream_closed",
            "message": message,
            "param": None,
        }
        yield sse(error)


async def _stored(services: Services, run: Run) -> ResponsesTranslator:
    """The translator, fed what the run's log holds now."""
    translator = translator_of(run)
    async for page in stored_pages(
        services.read_sessionmaker, run.id, 0, retry_for_s=services.settings.storage_retry_s
    ):
        for env in page:
            translator.translate(env)
    return translator


def _stream(
    services: Services, run: Run, known: Envelope | None, translator: ResponsesTranslator, after: int
) -> Response:
    settings = services.settings
    return EventStream(
        _frames(services, run.id, known, translator, after),
        ping=settings.sse_ping_s,
        sep=SEP,
        send_timeout=settings.sse_send_timeout_s,
        headers={**SSE_HEADERS, "X-Swarm-Run": run.id, "X-Swarm-Conversation": run.conversation_id},
    )


@router.post("/responses", name="openai_create_response", summary="Run a team (OpenAI Responses API)")
async def create_response(
    body: ResponseCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> Response:
    if body.tools:
        raise BadRequest(
            "`tools` are not supported: a team calls its own tools. Send the request without them.",
            code="tools_not_supported",
        )
    conversation: str | None = None
    if body.previous_response_id is not None:
        conversation = (await owned_run(session, principal.id, body.previous_response_id)).conversation_id
    task = task_of(messages_of(body), pinned=conversation is not None)
    metadata: dict[str, str | bool] = {
        "protocol": "openai.responses",
        "openai.include_reasoning": body.include_reasoning,
        "openai.background": bool(body.background),
    }
    if body.previous_response_id is not None:
        metadata["openai.previous_response_id"] = body.previous_response_id
    run, queued = await start_run(session, principal, services, body.model, task, conversation, metadata)
    translator = translator_of(run)
    if body.stream:
        return _stream(services, run, queued, translator, -1)
    headers = {"X-Swarm-Run": run.id, "X-Swarm-Conversation": run.conversation_id}
    if body.background:  # the response as it stands: queued
        if queued is not None:
            translator.translate(queued)
        return JSONResponse(translator.response(), headers=headers)
    async with aclosing(run_batches(services, run.id, queued)) as batches:
        async for batch in batches:
            for env in batch:
                translator.translate(env)
    if not translator.ended:
        where = f"{PREFIX}/responses/{response_id(run.id)}"
        message = f"The server stopped following the run before it ended; it goes on: GET {where}."
        return JSONResponse(openai_error(503, message, "stream_closed"), status_code=503, headers=headers)
    return JSONResponse(translator.response(), headers=headers)


@router.get(
    "/responses/{resp_id}", name="openai_get_response", summary="A response, or its events from a sequence number"
)
async def get_response(
    resp_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1)] = -1,
) -> Response:
    run = await owned_run(session, principal.id, resp_id)
    await session.close()  # never hold a request's session across a stream
    if stream:
        return _stream(services, run, None, translator_of(run), starting_after)
    return JSONResponse((await _stored(services, run)).response())


@router.post("/responses/{resp_id}/cancel", name="openai_cancel_response", summary="Cancel a response's run")
async def cancel_response(
    resp_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> Response:
    run = await owned_run(session, principal.id, resp_id)
    run = await RunService(session, principal, services).cancel(run.id)
    await session.close()
    translator = await _stored(services, run)
    return JSONResponse(translator.response())
