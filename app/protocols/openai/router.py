"""The OpenAI-compatible dialect, under ``/openai/v1``: teams as models, runs as chat completions.

A chat completion is an ordinary run, started through ``RunService`` (auth, limits, ownership and
metrics as on ``/v1``) and followed through ``follow_batches`` exactly as the SSE route follows
one; ``translator.py`` turns its envelopes into OpenAI's chunks. Each call is a new run. Without a
pinned conversation it starts a new conversation whose task carries the request's earlier messages
as a transcript. Pinned (the ``X-Swarm-Conversation`` header, or a conversation id as ``user``), the
run continues that conversation (the principal's own), which holds its context already, and only
the last message is sent; and when the conversation's run waits for a person, the last message is
the answer and the completion is that run on. The response names both in ``X-Swarm-Run`` and
``X-Swarm-Conversation``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServicesDep, SessionDep
from app.api.services import Services
from app.auth.service import Principal
from app.conversations.repository import ConversationRepository
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
from app.runs.repository import RunEventRepository, RunRepository
from app.runs.schemas import InputCreate
from app.runs.service import RunService
from app.runs.sse import SEP, SSE_HEADERS, EventStream
from app.teams.repository import TeamRepository

# not in docs/openapi.json: that document is SwarmDirector's own API (problem+json errors, generated
# clients); this dialect's reference is OpenAI's, and docs/protocols.md says what of it is served
router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)

CONVERSATION_PREFIX = "conv_"

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


def pinned_conversation(body: ChatCompletionCreate, header: str | None) -> str | None:
    """The conversation the request continues: the header's, or ``user`` when it names a conversation
    (any other ``user``, an end user's id as OpenAI has it, pins nothing)."""
    user = body.user if body.user is not None and body.user.startswith(CONVERSATION_PREFIX) else None
    if header is not None and user is not None and header != user:
        message = f"`user` names conversation '{user}' and X-Swarm-Conversation '{header}': name one."
        raise BadRequest(message, code="conversation_conflict")
    return header or user


async def _waiting(session: SessionDep, principal: Principal, conversation: str) -> tuple[Run, str, int] | None:
    """The conversation's run that waits for a person, its first open request and that request's seq."""
    await ConversationRepository(session).get(principal.id, conversation)  # the caller's, else a 404
    for run in await RunRepository(session).active_in_conversation(conversation):
        if run.status != "awaiting_input":
            continue
        requested, received = await RunEventRepository(session).open_inputs(run.id)
        waiting = sorted((seq, rid) for rid, seq in requested.items() if rid not in received)
        if waiting:
            return run, waiting[0][1], waiting[0][0]
    return None


async def _start(
    body: ChatCompletionCreate,
    session: SessionDep,
    principal: Principal,
    services: Services,
    conversation: str | None,
) -> tuple[Run, Envelope | None, int | None]:
    """The run the completion follows: a new one, or (``resumes_at``) the conversation's run that the
    request's last message answers."""
    if body.tools or body.functions:
        field = "tools" if body.tools else "functions"
        raise BadRequest(
            f"`{field}` are not supported: a team calls its own tools. Send the request without them.",
            code="tools_not_supported",
        )
    task = task_of(body.messages, pinned=conversation is not None)
    if conversation is not None and (waiting := await _waiting(session, principal, conversation)) is not None:
        run, request_id, seq = waiting
        await RunService(session, principal, services).provide_input(
            run.id, InputCreate(request_id=request_id, content=task)
        )
        await session.close()
        return run, None, seq
    metadata: dict[str, str | bool] = {"protocol": "openai"}
    if body.user is not None and conversation != body.user:
        metadata["openai.user"] = body.user
    run, queued = await start_run(session, principal, services, body.model, task, conversation, metadata)
    return run, queued, None


async def _frames(
    services: Services, run_id: str, known: Envelope | None, translator: ChatTranslator
) -> AsyncGenerator[bytes, None]:
    async with aclosing(run_batches(services, run_id, known)) as batches:
        async for batch in batches:
            yield translator.frames(batch)
            if translator.ended:  # the run's end, or a question for a person
                return
    if not translator.ended:
        message = f"The stream was cut before the run ended; the run goes on: GET /v1/runs/{run_id}."
        yield translator.frames(()) + frame(openai_error(503, message, "stream_closed"))


@router.post(
    "/chat/completions",
    name="openai_create_chat_completion",
    summary="Run a team on a chat (OpenAI Chat Completions)",
    description=(
        "`model` is a team's name. A new run each call; `content` is the team's final result (or a "
        "person's question, answered by the next request pinned to the conversation), and the other agents' "
        "turns come as `reasoning_content` (`include_reasoning: false` leaves them out). With `stream`, "
        "OpenAI's chunks as SSE, ending `data: [DONE]`."
    ),
)
async def create_chat_completion(
    body: ChatCompletionCreate,
    session: SessionDep,
    principal: PrincipalDep,
    services: ServicesDep,
    conversation: ConversationHeader = None,
) -> Response:
    run, queued, resumes_at = await _start(body, session, principal, services, pinned_conversation(body, conversation))
    created = int(run.created_at.timestamp())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    completion_id = f"chatcmpl-{run.id}" if resumes_at is None else f"chatcmpl-{run.id}-{resumes_at}"
    translator = ChatTranslator(
        completion_id,
        body.model,
        created,
        include_reasoning=body.include_reasoning,
        include_usage=include_usage and bool(body.stream),
        resumes_at=resumes_at,
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
            if translator.ended:
                break
    if translator.usage is None:
        message = f"The server stopped following the run before it ended; it goes on: GET /v1/runs/{run.id}."
        return JSONResponse(openai_error(503, message, "stream_closed"), status_code=503, headers=headers)
    content, reasoning = joined(chunks)
    completion = ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        choices=[ChatChoice(message=ChatCompletionMessage(content=content, reasoning_content=reasoning or None))],
        usage=CompletionUsage(**translator.usage),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)
