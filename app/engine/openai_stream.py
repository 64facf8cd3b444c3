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
default headers, with the HTTP client's own), its timeouts and its errors: a refused request raises
the exception the SDK would (``RateLimitError`` for 429, ``InternalServerError`` for 5xx,
``APITimeoutError``, ``APIConnectionError``), and a stream that breaks raises httpx's error as the
SDK's stream does, so ``GuardedModelClient`` classifies and retries it as before.
``tests/engine/test_openai_stream.py`` holds both clients to equal results, requests and failures.

The stream goes over aiohttp (``StreamTransport``), not the SDK's httpx client: a read costs about
20 us of CPU there against about 100 through httpx, httpcore, h11 and an anyio cancel scope, and
a call's request and response about 0.3 ms against 1.4 (``bench/model_client.py``). Under load
every token is a read of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
import httpx
import openai
import orjson
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.http_exceptions import TransferEncodingError
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
from httpx._utils import URLPattern, get_environment_proxies  # httpx pinned: its reading of the proxies
from pydantic import BaseModel
from yarl import URL

from app.engine.interrupts import CancelLink
from app.engine.sse import SSEDecoder

event_logger = logging.getLogger(EVENT_LOGGER_NAME)
EMPTY_CHUNK_WARNING_THRESHOLD = 10  # AutoGen's
# after [DONE], how long to wait for the end of the body, so that the connection goes back to the pool
# (a response closed before its end closes its connection: a new TCP, or TLS, handshake per call)
DRAIN_S = 0.25


# what the SDK's HTTP client allows (openai.DefaultAsyncHttpxClient): connections, and how long an idle one is kept
MAX_CONNECTIONS = 1000
KEEPALIVE_S = 5.0
# the encodings aiohttp can decode, of those httpx asks for
DECODABLE = {"gzip", "deflate"} | ({"br"} if HAS_BROTLI else set()) | ({"zstd"} if HAS_ZSTD else set())


class StreamTransport:
    """The lean stream's HTTP client: one aiohttp session for every provider of the server.

    Made on first use, inside the running loop, and as the SDK's httpx client is made: httpx's SSL
    context (the same trust store, ``SSL_CERT_FILE`` honoured), up to 1,000 connections, an idle one
    kept 5 s, redirects followed. Unlike it, no cookie is kept: a provider's cookies set during one
    principal's run are never sent with another's. The environment's proxies are not looked up here
    (aiohttp's ``trust_env`` would read them, and ``~/.netrc``, in a thread on every request): each
    endpoint carries the proxy httpx would use for it (``env_proxy``).
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S, ssl=httpx.create_ssl_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, timeout=client_timeout(None)
            )
        return self._session

    @property
    def closed(self) -> bool:
        return self._session is None or self._session.closed

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def client_timeout(timeout: float | httpx.Timeout | None) -> aiohttp.ClientTimeout:
    """An httpx (SDK) timeout as aiohttp's: connecting, waiting for the pool, and each read (no total)."""
    t = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
    return aiohttp.ClientTimeout(total=None, connect=t.pool, sock_connect=t.connect, sock_read=t.read)


def env_proxy(url: httpx.URL) -> URL | None:
    """The proxy httpx (the SDK's client, ``trust_env``) sends a request for ``url`` through, if any.

    From the environment as httpx reads it: ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY``, the
    most specific first, and ``NO_PROXY`` (hosts, domains, addresses, ``*``). Credentials in the
    proxy's URL stay in it: aiohttp sends them as ``Proxy-Authorization``, as httpx does.
    """
    mounts = sorted(((URLPattern(k), v) for k, v in get_environment_proxies().items()), key=lambda m: m[0])
    for pattern, proxy in mounts:
        if pattern.matches(url):
            if proxy is None:
                return None
            return URL(proxy if "://" in proxy else f"http://{proxy}")
    return None


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """Where a provider's chat completions are POSTed, with which headers and through which proxy:
    built once per provider (the environment's proxies are read then)."""

    url: httpx.URL
    headers: Mapping[str, str]
    target: URL  # ``url`` for aiohttp
    proxy: URL | None = None

    @classmethod
    def of(cls, sdk: openai.AsyncOpenAI, auth: Mapping[str, str], http: httpx.AsyncClient) -> ChatEndpoint:
        """The SDK client's own endpoint: its base URL and query (Azure's api-version), its default headers.

        The headers are those the SDK's request carries through its httpx client: the client's own
        (``accept-encoding``, ``connection``), then the SDK's defaults and the key.
        """
        query = {k: str(v) for k, v in sdk.default_query.items()}
        url = httpx.URL(f"{sdk.base_url}chat/completions", params=query or None)
        headers = {k.lower(): v for k, v in http.headers.items()}
        encodings = [e.strip() for e in headers.get("accept-encoding", "").split(",")]
        headers["accept-encoding"] = ", ".join(e for e in encodings if e in DECODABLE)
        headers.update({k.lower(): v for k, v in sdk.default_headers.items() if isinstance(v, str)})
        headers.update({k.lower(): v for k, v in auth.items()})
        proxy = env_proxy(url) if http.trust_env else None
        return cls(url, headers, URL(str(url), encoded=True), proxy)


def _stream_error(data: Any, request: httpx.Request) -> openai.APIError:
    """An error event inside a 200 stream, as the SDK raises it."""
    error = data.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


def _broken_stream(exc: aiohttp.ClientError) -> httpx.HTTPError:
    """A stream that breaks after its headers, as httpx raises it through the SDK's stream."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(f"the provider sent nothing for longer than the read timeout ({exc})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        chunked = any(isinstance(a, TransferEncodingError) for a in (exc.__cause__, *exc.args))
        how = "incomplete chunked read" if chunked else "incomplete body"
        return httpx.RemoteProtocolError(f"peer closed connection without sending complete message body ({how})")
    return httpx.ReadError(str(exc) or type(exc).__name__)


def _status_response(response: aiohttp.ClientResponse, content: bytes, request: httpx.Request) -> httpx.Response:
    """A refused request's response as httpx would hold it, for the SDK to make its error of."""
    headers = [(k, v) for k, v in response.raw_headers if k.lower() not in (b"content-encoding", b"content-length")]
    return httpx.Response(response.status, headers=headers, content=content, request=request)


async def _drain(body: aiohttp.StreamReader) -> None:
    """Read the rest of a body (normally nothing but its end) for a little while; what does not come is dropped."""
    if body.at_eof():
        return
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(DRAIN_S):
            while await body.readany():
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

    ``sdk`` (the provider's SDK client, shared by every model client of the server) and
    ``transport`` (the streams' HTTP client) belong to the registry: ``close`` leaves them open.
    """

    def __init__(
        self,
        sdk: openai.AsyncOpenAI,
        endpoint: ChatEndpoint,
        transport: StreamTransport,
        *,
        create_args: dict[str, Any],
        model_info: ModelInfo,
    ) -> None:
        super().__init__(sdk, create_args=create_args, model_info=model_info)
        self._endpoint = endpoint
        self._transport = transport
        self._timeout = client_timeout(sdk.timeout)

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

    def _request(self, params: CreateParams) -> tuple[bytes, aiohttp.ClientTimeout]:
        """The SDK's ``chat.completions.create(messages=..., stream=True, tools=..., **create_args)``: body, timeout."""
        args = dict(params.create_args)
        timeout = args.pop("timeout", None)  # a request option, not a body field
        extra_body = args.pop("extra_body", None)
        body: dict[str, Any] = {"messages": params.messages, **args, "stream": True}
        if params.tools:
            body["tools"] = params.tools
        if extra_body:
            body.update(extra_body)
        return orjson.dumps(body), self._timeout if timeout is None else client_timeout(timeout)

    def _httpx_request(self, body: bytes) -> httpx.Request:
        """The request as httpx would hold it: what the SDK's errors carry (made only for an error)."""
        return httpx.Request("POST", self._endpoint.url, headers=self._endpoint.headers, content=body)

    async def _send(self, body: bytes, limits: aiohttp.ClientTimeout, link: CancelLink) -> aiohttp.ClientResponse:
        """The response to the request, its status checked; failures raise what the SDK would."""
        if link.cancelled:
            raise asyncio.CancelledError
        link.waiting = True
        try:
            session = self._transport.session()
            try:
                response = await session.post(
                    self._endpoint.target,
                    data=body,
                    headers=self._endpoint.headers,
                    timeout=limits,
                    proxy=self._endpoint.proxy,
                )
            except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
                raise openai.APITimeoutError(request=self._httpx_request(body)) from exc
            except Exception as exc:
                raise openai.APIConnectionError(request=self._httpx_request(body)) from exc
            if not 200 <= response.status < 300:
                try:
                    content = await response.read()
                except aiohttp.ClientError:
                    content = b""
                finally:
                    response.release()
                refused = _status_response(response, content, self._httpx_request(body))
                raise self._client._make_status_error_from_response(refused) from None
            return response
        finally:
            link.waiting = False

    async def _lean_stream(
        self, params: CreateParams, cancellation_token: CancellationToken | None
    ) -> AsyncGenerator[str | CreateResult, None]:
        """AutoGen's chunk loop (``BaseOpenAIChatCompletionClient.create_stream``), on plain dicts."""
        body, timeout = self._request(params)
        # AutoGen links a future per chunk to the token; one link per call does the same
        link = CancelLink(cancellation_token)
        try:
            response = await self._send(body, timeout, link)
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
        reads = response.content
        done = False
        try:
            while not done:
                if link.cancelled:
                    raise asyncio.CancelledError
                link.waiting = True
                try:
                    raw = await reads.readany()
                except aiohttp.ClientError as exc:
                    raise _broken_stream(exc) from exc
                finally:
                    link.waiting = False
                if not raw:
                    break
                for data in decoder.feed(raw):
                    if data.startswith(b"[DONE]"):
                        done = True
                        break
                    parsed = orjson.loads(data)
                    if isinstance(parsed, dict) and parsed.get("error"):
                        raise _stream_error(parsed, self._httpx_request(body))
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
            if done:
                await _drain(reads)
        except asyncio.CancelledError:
            link.caught()  # the call is cancelled, not the task
            raise
        finally:
            # back to the pool when the body was read to its end; closed otherwise
            response.release()
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
