"""What both OpenAI routers share: the caller, the task a request makes, and the run it starts and follows.

A request of the dialect starts an ordinary run through ``RunService`` (auth, limits, ownership
and metrics as on ``/v1``) and follows it through ``follow_batches``, as the SSE route does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import Depends, Request
from pydantic import ValidationError

from app.api.deps import ServicesDep, SessionDep, get_principal
from app.api.services import Services
from app.auth.service import Principal, Unauthorized
from app.core.envelope import Envelope
from app.core.errors import BadRequest, NotFound
from app.protocols.openai.errors import PREFIX
from app.protocols.openai.schemas import ChatMessage
from app.runs.models import Run
from app.runs.schemas import RunCreate
from app.runs.service import RunService


async def dialect_principal(request: Request, services: ServicesDep) -> Principal:
    """The caller. The OpenAI SDKs always send a key: on an open server (loopback, no key created
    yet), where ``/v1`` needs none, any key is taken as none, as local OpenAI-compatible servers do;
    once keys exist, only a valid one passes."""
    try:
        return await get_principal(request, None)
    except Unauthorized:
        if await services.auth.is_open(services.settings, services.read_sessionmaker):
            return await services.auth.principal(services.settings, services.read_sessionmaker, None)
        raise


PrincipalDep = Annotated[Principal, Depends(dialect_principal)]


def task_of(messages: list[ChatMessage], *, pinned: bool) -> str:
    """The run's task: the last (user) message; before it, unless a conversation is pinned, the
    earlier messages as a transcript."""
    for i, message in enumerate(messages):
        if (kind := message.non_text()) is not None:
            raise BadRequest(f"messages[{i}] has a `{kind}` part: only text is supported.", code="unsupported_content")
    last = messages[-1]
    if last.role != "user":
        raise BadRequest("The last message must be the user's (role `user`).", code="invalid_messages")
    if pinned or len(messages) == 1:
        return last.text()
    transcript = "\n\n".join(f"{m.name or m.role}: {m.text()}" for m in messages[:-1])
    return f"The conversation so far:\n\n{transcript}\n\nThe new message:\n\n{last.text()}"


async def start_run(
    session: SessionDep,
    principal: Principal,
    services: Services,
    model: str,
    task: str,
    conversation: str | None,
    metadata: dict[str, str | bool],
) -> tuple[Run, Envelope | None]:
    """A run of the team named ``model`` on ``task``; the request's session is closed after it."""
    runs = RunService(session, principal, services)
    try:
        create = RunCreate(team_id=model, task=task, conversation_id=conversation, metadata=dict(metadata))
    except ValidationError as exc:  # a task of blanks: what the messages said is no task
        error = exc.errors(include_url=False)[0]
        raise BadRequest(f"The messages make no task: {error['msg']}.", code="invalid_messages") from None
    try:
        run = await runs.create(create)
    except NotFound as exc:
        if exc.code != "team_not_found":
            raise
        raise NotFound(
            f"The model '{model}' does not exist: models are your teams (GET {PREFIX}/models).",
            code="model_not_found",
        ) from exc
    await session.close()  # never hold a request's session across a stream
    return run, runs.queued


async def run_batches(services: Services, run_id: str, known: Envelope | None) -> AsyncGenerator[list[Envelope], None]:
    async for item in services.follow(run_id, 0, [known] if known is not None else None):
        # a lag is re-attached by follow_batches itself; after a StreamClosing nothing comes, and
        # the callers tell the client the stream was cut before the run's end
        if isinstance(item, list):
            yield item
