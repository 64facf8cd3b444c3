"""The lean model stream: OpenAI-compatible chat completions read straight off the wire.

AutoGen's ``OpenAIChatCompletionClient`` streams through the openai SDK, which decodes every
server-sent event to text and builds a pydantic ``ChatCompletionChunk`` for each token (about
145 us of CPU per token on the benchmark's machine; this client spends about 19, see
``bench/model_client.py``). This client is AutoGen's own class with one thing changed: a stream
without structured output is POSTed over the shared HTTP client and its events are parsed with
orjson into the same ``CreateResult`` AutoGen would build.

What stays AutoGen's: the request (``_process_create_args`` converts messages, tools,
``tool_choice`` and the model's arguments, with every check it makes), the non-streaming
``create``, structured output (a ``BaseModel`` as ``json_output`` goes through the SDK's beta
stream), usage totals, token counting. What stays the SDK's: the endpoint (its base URL, query and
default headers) and its errors: a refused request raises the exception the SDK would
(``RateLimitError`` for 429, ``InternalServerError`` for 5xx, ``APITimeoutError``,
``APIConnectionError``), so ``GuardedModelClient`` classifies and retries it as before.
``tests/engine/test_openai_stream.py`` holds both clients to equal results and equal requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx
import openai
import orjson
from autogen_core import EVENT_LOGGER_NAME, CancellationToken, FunctionCall
from autogen_core.logging import LLMStreamEndEvent, LLMStreamStartEvent
from autogen_core.models import (
    ChatCompletionTokenLogprob,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    TopLogprob,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models._utils.normalize_stop_reason import normalize_stop_reason
from autogen_ext.models._utils.parse_r1_content import parse_r1_content
from autogen_ext.models.openai._openai_client import BaseOpenAIChatCompletionClient, CreateParams
from pydantic import BaseModel

from app.engine.interrupts import CancelLink
from app.engine.sse import SSEDecoder

event_logger = logging.getLogger(EVENT_LOGGER_NAME)
EMPTY_CHUNK_WARNING_THRESHOLD = 10  # AutoGen's
# after [DONE], how long to wait for the end of the body, so that the connection goes back to the pool
# (a response closed before its end closes its connection: a new TCP, or TLS, handshake per call)
DRAIN_S = 0.25


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """Where a provider's chat completions are POSTed, and with which headers: built once per provider."""

    url: httpx.URL
    headers: Mapping[str, str]

    @classmethod
    def of(cls, sdk: openai.AsyncOpenAI, auth: Mapping[str, str]) -> ChatEndpoint:
        """The SDK client's own endpoint: its base URL and query (Azure's api-version), its default headers."""
        query = {k: str(v) for k, v in sdk.default_query.items()}
        url = httpx.URL(f"{sdk.base_url}chat/completions", params=query or None)
        headers = {k: v for k, v in sdk.default_headers.items() if isinstance(v, str)}
        return cls(url, {**headers, **auth})


def _stream_error(data: Any, request: httpx.Request) -> openai.APIError:
    """An error event inside a 200 stream, as the SDK raises it."""
    error = data.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


async def _drain(reads: AsyncIterator[bytes]) -> None:
    """Read the rest of a body (normally nothing but its end) for a little while; what does not come is dropped."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in reads:
                pass


def _logprobs(content: list[dict[str, Any]]) -> list[ChatCompletionTokenLogprob]:
    return [
        ChatCompletionTokenLogprob(
            token=x["token"],
            logprob=x["logprob"],
            top_logprobs=[TopLogprob(logprob=y["logprob"], bytes=y.get("bytes")) for y in x.get("top_logprobs") or ()],
            bytes=x.get("bytes"),
        )
        for x in content
    ]


class LeanOpenAIChatCompletionClient(BaseOpenAIChatCompletionClient):
    """AutoGen's OpenAI client whose streams are read by ``_lean_stream`` instead of the openai SDK.

    ``sdk`` (the provider's SDK client, shared by every model client of the server) and ``http``
    (the HTTP client it was given) belong to the registry: ``close`` leaves them open.
    """

    def __init__(
        self,
        sdk: openai.AsyncOpenAI,
        endpoint: ChatEndpoint,
        http: httpx.AsyncClient,
        *,
        create_args: dict[str, Any],
        model_info: ModelInfo,
    ) -> None:
        super().__init__(sdk, create_args=create_args, model_info=model_info)
        self._endpoint = endpoint
        self._http = http

    async def close(self) -> None:
        return None

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
        max_consecutive_empty_chunk_tolerance: int = 0,
        include_usage: bool | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        params = self._process_create_args(messages, tools, tool_choice, json_output, extra_create_args)
        if params.response_format is not None:
            # structured output: the SDK's beta stream parses the reply into the model class
            async for item in super().create_stream(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
                max_consecutive_empty_chunk_tolerance=max_consecutive_empty_chunk_tolerance,
                include_usage=include_usage,
            ):
                yield item
            return
        # the rest of AutoGen's create_stream preamble, as it is
        if include_usage is not None:
            if "stream_options" in params.create_args:
                stream_options = params.create_args["stream_options"]
                if "include_usage" in stream_options and stream_options["include_usage"] != include_usage:
                    raise ValueError(
                        "include_usage and extra_create_args['stream_options']['include_usage'] are both set, "
                        "but differ in value."
                    )
            else:
                params.create_args["stream_options"] = {"include_usage": True}
        if max_consecutive_empty_chunk_tolerance != 0:
            warnings.warn(
                "The 'max_consecutive_empty_chunk_tolerance' parameter is deprecated and will be removed in the "
                "future releases. All of empty chunks will be skipped with a warning.",
                DeprecationWarning,
                stacklevel=2,
            )
        async for item in self._lean_stream(params, cancellation_token):
            yield item

    def _request(self, params: CreateParams) -> httpx.Request:
        """The SDK's ``chat.completions.create(messages=..., stream=True, tools=..., **create_args)`` request."""
        args = dict(params.create_args)
        timeout = args.pop("timeout", None)  # a request option, not a body field
        extra_body = args.pop("extra_body", None)
        body: dict[str, Any] = {"messages": params.messages, **args, "stream": True}
        if params.tools:
            body["tools"] = params.tools
        if extra_body:
            body.update(extra_body)
        return self._http.build_request(
            "POST",
            self._endpoint.url,
            content=orjson.dumps(body),
            headers=self._endpoint.headers,
            timeout=timeout if timeout is not None else self._client.timeout,
        )

    async def _send(self, request: httpx.Request, link: CancelLink) -> httpx.Response:
        """The response to ``request``, its status checked; failures raise what the SDK would."""
        if link.cancelled:
            raise asyncio.CancelledError
        link.waiting = True
        try:
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise openai.APITimeoutError(request=request) from exc
            except Exception as exc:
                raise openai.APIConnectionError(request=request) from exc
            if not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise self._client._make_status_error_from_response(response) from None
            return response
        finally:
            link.waiting = False

    async def _lean_stream(
        self, params: CreateParams, cancellation_token: CancellationToken | None
    ) -> AsyncGenerator[str | CreateResult, None]:
        """AutoGen's chunk loop (``BaseOpenAIChatCompletionClient.create_stream``), on plain dicts."""
        request = self._request(params)
        # AutoGen links a future per chunk to the token; one link per call does the same
        link = CancelLink(cancellation_token)
        try:
            response = await self._send(request, link)
        except asyncio.CancelledError:
            link.caught()
            raise
        log_events = event_logger.isEnabledFor(logging.INFO)
        decoder = SSEDecoder()
        chunk: dict[str, Any] | None = None
        stop_reason: str | None = None
        content_deltas: list[str] = []
        thought_deltas: list[str] = []
        full_tool_calls: dict[int, FunctionCall] = {}
        logprobs: list[ChatCompletionTokenLogprob] | None = None
        empty_chunk_count = 0
        empty_chunk_warned = False
        is_reasoning = False
        reads = response.aiter_bytes()
        try:
            done = False
            while not done:
                if link.cancelled:
                    raise asyncio.CancelledError
                link.waiting = True
                try:
                    raw = await anext(reads)
                except StopAsyncIteration:
                    break
                finally:
                    link.waiting = False
                for data in decoder.feed(raw):
                    if data.startswith(b"[DONE]"):
                        done = True
                        break
                    parsed = orjson.loads(data)
                    if isinstance(parsed, dict) and parsed.get("error"):
                        raise _stream_error(parsed, request)
                    if chunk is None and log_events:
                        event_logger.info(LLMStreamStartEvent(messages=cast(list[dict[str, Any]], params.messages)))
                    chunk = parsed
                    choices = parsed.get("choices")
                    if not choices:
                        # empty chunks come from endpoints under heavy load (AutoGen issue 4213)
                        empty_chunk_count += 1
                        if not empty_chunk_warned and empty_chunk_count >= EMPTY_CHUNK_WARNING_THRESHOLD:
                            empty_chunk_warned = True
                            warnings.warn(
                                f"Received more than {EMPTY_CHUNK_WARNING_THRESHOLD} consecutive empty chunks. "
                                "Empty chunks are being ignored.",
                                stacklevel=2,
                            )
                        continue
                    empty_chunk_count = 0
                    if len(choices) > 1:
                        warnings.warn(
                            f"Received a chunk with {len(choices)} choices. Only the first choice will be used.",
                            UserWarning,
                            stacklevel=2,
                        )
                    choice = choices[0]
                    if stop_reason is None and parsed.get("usage") is None:
                        # a usage chunk keeps the finish reason of the chunk before it (liteLLM)
                        stop_reason = choice.get("finish_reason")
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content")
                    if isinstance(reasoning, str) and reasoning:
                        if not is_reasoning:
                            reasoning = "<think>" + reasoning
                            is_reasoning = True
                        thought_deltas.append(reasoning)
                        yield reasoning
                    elif reasoning is None and is_reasoning:
                        thought_deltas.append("</think>")
                        is_reasoning = False
                        yield "</think>"
                    text = delta.get("content")
                    if text:
                        content_deltas.append(text)
                        yield text
                        continue  # AutoGen reads no tool calls or logprobs from a chunk with text
                    tool_call_chunks = delta.get("tool_calls")
                    if tool_call_chunks is not None:
                        for part in tool_call_chunks:
                            call = full_tool_calls.get(part["index"])
                            if call is None:
                                call = full_tool_calls[part["index"]] = FunctionCall(id="", arguments="", name="")
                            if part.get("id") is not None:
                                call.id += part["id"]
                            function = part.get("function")
                            if function is not None:
                                if function.get("name") is not None:
                                    call.name += function["name"]
                                if function.get("arguments") is not None:
                                    call.arguments += function["arguments"]
                    choice_logprobs = choice.get("logprobs")
                    if choice_logprobs and choice_logprobs.get("content"):
                        logprobs = _logprobs(choice_logprobs["content"])
            if done and not response.is_closed:
                await _drain(reads)
        except asyncio.CancelledError:
            link.caught()  # the call is cancelled, not the task
            raise
        finally:
            await response.aclose()
        yield self._result(chunk, stop_reason, content_deltas, thought_deltas, full_tool_calls, logprobs, log_events)

    def _result(
        self,
        chunk: dict[str, Any] | None,
        stop_reason: str | None,
        content_deltas: list[str],
        thought_deltas: list[str],
        full_tool_calls: dict[int, FunctionCall],
        logprobs: list[ChatCompletionTokenLogprob] | None,
        log_events: bool,
    ) -> CreateResult:
        """AutoGen's finalisation of a stream, as it is."""
        if stop_reason == "function_call":
            raise ValueError("Function calls are not supported in this context")
        # the usage chunk is not guaranteed to be the last one; AutoGen reads it from the last
        usage_data = (chunk.get("usage") if chunk else None) or {}
        usage = RequestUsage(
            prompt_tokens=usage_data.get("prompt_tokens") or 0,
            completion_tokens=usage_data.get("completion_tokens") or 0,
        )
        content: str | list[FunctionCall]
        thought: str | None = None
        if full_tool_calls:
            content = list(full_tool_calls.values())
            if content_deltas:
                thought = "".join(content_deltas)  # text beside tool calls is a thought
        else:
            if content_deltas:
                content = "".join(content_deltas)
            else:
                warnings.warn("No text content or tool calls are available. Model returned empty result.", stacklevel=2)
                content = ""
            if thought_deltas:
                # AutoGen's own strip: characters, not the tags (a thought ending in "k" loses it there too)
                thought = "".join(thought_deltas).lstrip("<think>").rstrip("</think>")
            if self._model_info["family"] == ModelFamily.R1 and thought is None:
                thought, content = parse_r1_content(content)
        result = CreateResult(
            finish_reason=normalize_stop_reason(stop_reason),
            content=content,
            usage=usage,
            cached=False,
            logprobs=logprobs,
            thought=thought,
        )
        if log_events:
            event_logger.info(
                LLMStreamEndEvent(
                    response=result.model_dump(),
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                )
            )
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        self._actual_usage = RequestUsage(
            prompt_tokens=self._actual_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._actual_usage.completion_tokens + usage.completion_tokens,
        )
        return result
