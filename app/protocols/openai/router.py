"""The OpenAI-compatible dialect, under ``/openai/v1``: teams as models, runs as chat completions.

A chat completion is an ordinary run, started through ``RunService`` (auth, limits, ownership and
metrics as on ``/v1``) and followed through ``follow_batches`` exactly as the SSE route follows
one; ``translator.py`` turns its envelopes into OpenAI's chunks. Each call is a new run. Without
``X-Swarm-Conversation`` it starts a new conversation whose task carries the request's earlier
messages as a transcript; with it, the run continues that conversation (the principal's own), which
holds its context already, and only the last message is sent. The response names both in
``X-Swarm-Run`` and ``X-Swarm-Conversation``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServicesDep, SessionDep
from app.api.services import Services
from app.core.envelope import Envelope
from app.core.errors import BadRequest
from app.protocols.openai.errors import PREFIX, OpenAIErrors, openai_error
from app.protocols.openai.responses import router as responses_router
from app.protocols.openai.runs import PrincipalDep, run_batches, start_run, task_of
from app.protocols.openai.schemas import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionCreate,
    ChatCompletionMessage,
    CompletionUsage,
    ModelCard,
    ModelList,
)
from app.protocols.openai.translator import NO_RESULT, ChatTranslator, frame, joined, run_error
from app.runs.models import Run
from app.runs.sse import SEP, SSE_HEADERS, EventStream
from app.teams.repository import TeamRepository

# not in docs/openapi.json: that document is SwarmDirector's own API (problem+json errors, generated
# clients); this dialect's reference is OpenAI's, and docs/protocols.md says what of it is served
router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)

ConversationHeader = Annotated[
    str | None,
    Header(
        alias="X-Swarm-Conversation",
        description="Continue this conversation of yours (its context is kept); only the last message is sent.",
    ),
]


def install(app: FastAPI) -> None:
    """The dialect on ``app``: its routes, and OpenAI's error body for every error under its prefix."""
    app.include_router(router)
    app.include_router(responses_router)
    app.add_middleware(OpenAIErrors)


@router.get("/models", name="openai_list_models", summary="The principal's teams, as OpenAI models")
async def list_models(session: SessionDep, principal: PrincipalDep) -> ModelList:
    teams = TeamRepository(session)
    cards: list[ModelCard] = []
    cursor: str | None = None
    while True:
        page = await teams.list(principal.id, limit=200, cursor=cursor)
        cards.extend(
            ModelCard(id=t.name, created=int(t.created_at.timestamp()), owned_by=principal.id) for t in page.items
        )
        if page.next_cursor is None:
            return ModelList(data=cards)
        cursor = page.next_cursor


async def _start(
    body: ChatCompletionCreate,
    session: SessionDep,
    principal: PrincipalDep,
    services: Services,
    conversation: str | None,
) -> tuple[Run, Envelope | None]:
    if body.tools or body.functions:
        field = "tools" if body.tools else "functions"
        raise BadRequest(
            f"`{field}` are not supported: a team calls its own tools. Send the request without them.",
            code="tools_not_supported",
        )
    task = task_of(body.messages, pinned=conversation is not None)
    return await start_run(session, principal, services, body.model, task, conversation, {"protocol": "openai"})


async def _frames(
    services: Services, run_id: str, known: Envelope | None, translator: ChatTranslator
) -> AsyncGenerator[bytes, None]:
    ended = False
    async for batch in run_batches(services, run_id, known):
        yield translator.frames(batch)
        ended = ended or any(env.terminal for env in batch)
    if not ended:
        message = f"The stream was cut before the run ended; the run goes on: GET /v1/runs/{run_id}."
        yield translator.frames(()) + frame(openai_error(503, message, "stream_closed"))


@router.post(
    "/chat/completions",
    name="openai_create_chat_completion",
    summary="Run a team on a chat (OpenAI Chat Completions)",
    description=(
        "`model` is a team's name. A new run each call; `content` is the team's final result, and the "
        "other agents' turns come as `reasoning_content` (`include_reasoning: false` leaves them out). "
        "With `stream`, OpenAI's chunks as SSE, ending `data: [DONE]`."
    ),
)
async def create_chat_completion(
    body: ChatCompletionCreate,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    conversation: ConversationHeader = None,
) -> Response:
    run, queued = await _start(body, session, principal, services, conversation)
    created = int(run.created_at.timestamp())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    translator = ChatTranslator(
        f"chatcmpl-{run.id}",
        body.model,
        created,
        include_reasoning=body.include_reasoning,
        include_usage=include_usage and bool(body.stream),
    )
    headers = {"X-Swarm-Run": run.id, "X-Swarm-Conversation": run.conversation_id}
    if body.stream:
        settings = services.settings
        return EventStream(
            _frames(services, run.id, queued, translator),
            ping=settings.sse_ping_s,
            sep=SEP,
            send_timeout=settings.sse_send_timeout_s,
            headers={**SSE_HEADERS, **headers},
        )
    chunks: list[dict[str, Any]] = translator.start()
    async with aclosing(run_batches(services, run.id, queued)) as batches:
        async for batch in batches:
            for env in batch:
                if env.type in NO_RESULT:
                    error = {"error": {**run_error(env), "param": None}}
                    return JSONResponse(error, status_code=500, headers=headers)
                chunks.extend(translator.translate(env))
    if translator.usage is None:
        message = f"The server stopped following the run before it ended; it goes on: GET /v1/runs/{run.id}."
        return JSONResponse(openai_error(503, message, "stream_closed"), status_code=503, headers=headers)
    content, reasoning = joined(chunks)
    completion = ChatCompletion(
        id=f"chatcmpl-{run.id}",
        created=created,
        model=body.model,
        choices=[ChatChoice(message=ChatCompletionMessage(content=content, reasoning_content=reasoning or None))],
        usage=CompletionUsage(**translator.usage),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)
