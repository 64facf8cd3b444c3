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
from app.auth.service import Principal
from app.core.envelope import Envelope
from app.core.errors import BadRequest, NotFound
from app.protocols.openai.errors import PREFIX, openai_error
from app.protocols.openai.responses_translator import CALL_PREFIX, HUMAN_INPUT, ResponsesTranslator, call_id, sse
from app.protocols.openai.runs import PrincipalDep, run_batches, start_run, task_of
from app.protocols.openai.schemas import ChatMessage, InputItem, ResponseCreate
from app.runs.models import Run
from app.runs.repository import RunRepository
from app.runs.schemas import InputCreate
from app.runs.service import RunService
from app.runs.sse import SEP, SSE_HEADERS, EventStream
from app.runtime.streams import stored_pages

router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)

RESPONSE_PREFIX = "resp_"
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def response_id(run_id: str) -> str:
    return RESPONSE_PREFIX + run_id


async def owned_run(session: SessionDep, principal_id: str, resp_id: str) -> tuple[Run, int | None]:
    """The run behind a response id, and the seq of the input request the response answers (none for
    a run's first response); another principal's, or none, is a 404 naming the response."""
    missing = NotFound(f"No response with id '{resp_id}'.", code="response_not_found")
    run_id, _, seq = resp_id.removeprefix(RESPONSE_PREFIX).partition("-")
    if not resp_id.startswith(RESPONSE_PREFIX) or (seq and not seq.isdecimal()):
        raise missing
    try:
        run = await RunRepository(session).get(principal_id, run_id)
    except NotFound:
        raise missing from None
    return run, int(seq) if seq else None


def input_items(body: ResponseCreate) -> list[InputItem]:
    return [InputItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input


def messages_of(body: ResponseCreate) -> list[ChatMessage]:
    """``instructions`` and ``input`` as chat messages (text only)."""
    items = input_items(body)
    messages = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    for i, item in enumerate(items):
        if item.type != "message" or item.role is None:
            message = (
                f"input[{i}] is a `{item.type}` item: only messages are supported, and a `function_call_output` "
                f"answering the `{HUMAN_INPUT}` call of `previous_response_id`."
            )
            raise BadRequest(message, code="unsupported_input")
        parts = item.content if isinstance(item.content, list) else []
        if (kind := next((p.type for p in parts if p.type not in _TEXT_PARTS), None)) is not None:
            raise BadRequest(f"input[{i}] has a `{kind}` part: only text is supported.", code="unsupported_content")
        text = item.content if isinstance(item.content, str) else "".join(p.text or "" for p in parts)
        messages.append(ChatMessage(role=item.role, content=text))
    if not items:
        raise BadRequest("`input` has no message.", code="invalid_messages")
    return messages


def translator_of(run: Run, resumes_at: int | None = None) -> ResponsesTranslator:
    """The translator of one of ``run``'s responses (the first, or the one answering the input requested
    at seq ``resumes_at``), with the options the run's request gave."""
    meta = run.meta or {}
    first = response_id(run.id)
    return ResponsesTranslator(
        first if resumes_at is None else ResponsesTranslator.continuation_id(first, resumes_at),
        run.team_name,
        int(run.created_at.timestamp()),
        include_reasoning=meta.get("openai.include_reasoning", True) is not False,
        background=bool(meta.get("openai.background", False)),
        previous_response_id=meta.get("openai.previous_response_id") if resumes_at is None else None,
        metadata={"swarm_run": run.id, "swarm_conversation": run.conversation_id},
        resumes_at=resumes_at,
    )


async def _frames(
    services: Services, run_id: str, known: Envelope | None, translator: ResponsesTranslator, after: int
) -> AsyncGenerator[bytes, None]:
    last = after
    async with aclosing(run_batches(services, run_id, known)) as batches:
        async for batch in batches:
            out: list[bytes] = []
            for env in batch:
                for event in translator.translate(env):
                    if event["sequence_number"] > after:
                        out.append(sse(event))
                        last = event["sequence_number"]
            if out:
                yield b"".join(out)
            if translator.ended:  # the run's end, or an input request: the response is over
                return
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


async def _stored(services: Services, run: Run, resumes_at: int | None) -> tuple[ResponsesTranslator, set[str]]:
    """The response's translator, fed what the run's log holds now, and the input requests answered."""
    translator = translator_of(run, resumes_at)
    answered: set[str] = set()
    async for page in stored_pages(
        services.read_sessionmaker, run.id, 0, retry_for_s=services.settings.storage_retry_s
    ):
        for env in page:
            translator.translate(env)
            if env.type == "input.received":
                answered.add(call_id(env.data["request_id"]))
    return translator, answered


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


async def _answer(
    session: SessionDep, principal: Principal, services: Services, body: ResponseCreate, previous_id: str
) -> tuple[Run, int]:
    """``input``'s ``function_call_output`` given to the person's input request that ended response
    ``previous_id``; the run and the request's seq. An answer given already is not given again, so a
    request sent twice is harmless."""
    run, resumes_at = await owned_run(session, principal.id, previous_id)
    await session.close()
    previous, answered = await _stored(services, run, resumes_at)
    items = input_items(body)
    outputs = [item for item in items if item.type == "function_call_output"]
    if previous.waiting_on is None or previous.waiting_seq is None:
        message = (
            f"Response '{previous_id}' called no function: there is no call for a `function_call_output` to answer."
        )
        raise BadRequest(message, code="no_function_call")
    if len(outputs) != len(items) or len(outputs) != 1:
        message = (
            f"Response '{previous_id}' waits for a person: `input` must be the one `function_call_output` "
            f"of call '{previous.waiting_on}', and nothing else."
        )
        raise BadRequest(message, code="unsupported_input")
    if outputs[0].call_id != previous.waiting_on:
        message = (
            f"No function call '{outputs[0].call_id}' in response '{previous_id}': its call is '{previous.waiting_on}'."
        )
        raise BadRequest(message, code="unknown_call_id")
    if previous.waiting_on not in answered:
        request_id = previous.waiting_on.removeprefix(CALL_PREFIX)
        await RunService(session, principal, services).provide_input(
            run.id, InputCreate(request_id=request_id, content=outputs[0].output_text())
        )
        await session.close()
    return run, previous.waiting_seq


async def _waiting(session: SessionDep, principal: Principal, services: Services, previous_id: str) -> str:
    """The conversation of response ``previous_id``, refused while that response's call waits for its output."""
    run, resumes_at = await owned_run(session, principal.id, previous_id)
    if run.status == "awaiting_input":
        previous, answered = await _stored(services, run, resumes_at)
        if previous.waiting_on is not None and previous.waiting_on not in answered:
            message = (
                f"No output for function call '{previous.waiting_on}' of response '{previous_id}': the run waits "
                f"for a person; answer with a `function_call_output` item."
            )
            raise BadRequest(message, code="function_call_output_missing")
    return run.conversation_id


@router.post("/responses", name="openai_create_response", summary="Run a team (OpenAI Responses API)")
async def create_response(
    body: ResponseCreate, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> Response:
    if body.tools:
        raise BadRequest(
            "`tools` are not supported: a team calls its own tools. Send the request without them.",
            code="tools_not_supported",
        )
    answers = not isinstance(body.input, str) and any(item.type == "function_call_output" for item in body.input)
    queued: Envelope | None = None
    if answers:
        if body.previous_response_id is None:
            message = "A `function_call_output` answers a response's call: name it in `previous_response_id`."
            raise BadRequest(message, code="previous_response_id_missing")
        run, resumes_at = await _answer(session, principal, services, body, body.previous_response_id)
        translator = translator_of(run, resumes_at)
    else:
        conversation: str | None = None
        if body.previous_response_id is not None:
            conversation = await _waiting(session, principal, services, body.previous_response_id)
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
    if body.background:  # the response as it stands: queued, or (answering a call) in progress
        if queued is not None:
            translator.translate(queued)
        if answers:
            translator, _ = await _stored(services, run, translator.resumes_at)
        return JSONResponse(translator.response(), headers=headers)
    async with aclosing(run_batches(services, run.id, queued)) as batches:
        async for batch in batches:
            for env in batch:
                translator.translate(env)
            if translator.ended:
                break
    if not translator.ended:
        where = f"{PREFIX}/responses/{translator.response_id}"
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
    run, resumes_at = await owned_run(session, principal.id, resp_id)
    await session.close()  # never hold a request's session across a stream
    if stream:
        return _stream(services, run, None, translator_of(run, resumes_at), starting_after)
    translator, _ = await _stored(services, run, resumes_at)
    return JSONResponse(translator.response())


@router.post("/responses/{resp_id}/cancel", name="openai_cancel_response", summary="Cancel a response's run")
async def cancel_response(
    resp_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> Response:
    run, resumes_at = await owned_run(session, principal.id, resp_id)
    run = await RunService(session, principal, services).cancel(run.id)
    await session.close()
    translator, _ = await _stored(services, run, resumes_at)
    return JSONResponse(translator.response())
