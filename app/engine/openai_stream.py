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
from autogen_core import EVENT_LOGGER_NAME, CancellationToken
from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent, LLMStreamStartEvent
from autogen_core.models import CreateResult, LLMMessage, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import (
    AzureOpenAIChatCompletionClient,
    BaseOpenAIChatCompletionClient,
    OpenAIChatCompletionClient,
)
from pydantic import BaseModel
from yarl import URL

from app.engine.chunks import (
    HTML_HEAD,
    ChunkAssembler,
    ModelStreamError,
    html_summary,
    parse_event,
    provider_error,
    readable,
)
from app.engine.estimate import estimate
from app.engine.interrupts import CancelLink
from app.engine.sse import SSEDecoder
from app.patches.autogen_ext_private import CreateParams
from app.patches.httpx_proxies import environment_proxy
from app.patches.openai_private import status_error

event_logger = logging.getLogger(EVENT_LOGGER_NAME)
# after [DONE], how long to wait for the end of the body, so that the connection goes back to the pool
# (a response closed before its end closes its connection: a new TCP, or TLS, handshake per call)
DRAIN_S = 0.25


# how much of a streamed body is kept until its first event, in case it is not an event stream after all
HEAD_KEPT = 65_536
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
    proxy = environment_proxy(url)
    if proxy is None:
        return None
    return URL(proxy if "://" in proxy else f"http://{proxy}")


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


def whole_body(answer: ChunkAssembler, body: bytes, content_type: str, *, streamed: bool) -> None:
    """A 200 answer's whole body, read for what it is: a non-streamed call's answer, or the answer
    to a streamed request whose body is not an event stream (``streamed``).

    A chat completion (a server that ignored ``stream`` too) is read as one chunk. Anything else fails
    clearly: a JSON error (LM Studio answers a wrong path so, when the base URL lacks ``/v1``), an
    HTML page (a proxy's), or whatever else came.
    """
    instead = " instead of an event stream" if streamed else ""
    if HTML_HEAD.match(body[:200]) or "html" in content_type:
        page = html_summary(body.decode("utf-8", "replace"))
        raise ModelStreamError(
            "model_error",
            f"The provider answered with {page}{instead}: is the base URL right (it usually ends in /v1)?",
        )
    try:
        data, lenient = parse_event(body)
    except ModelStreamError:
        data, lenient = None, False
    if not isinstance(data, dict):
        text = readable(body.decode("utf-8", "replace"), 200)
        kind = content_type or "no content type"
        raise ModelStreamError("model_error", f"The provider answered with {kind}, not a chat completion: {text}")
    if data.get("error") or data.get("object") == "error":
        error = provider_error(data, where="instead of a stream" if streamed else "in its answer")
        if any(w in error.message.lower() for w in ("endpoint", "route", "not found", "unknown url")):
            error.message = error.args[0] + " (is the base URL right? It usually ends in /v1.)"
            error.args = (error.message,)
        raise error
    whole_answer(answer, data, lenient)


def whole_answer(answer: ChunkAssembler, data: dict[str, Any], lenient: bool = False) -> None:
    """A non-streamed chat completion read by the assembler, as one chunk whose delta is its message."""
    choices = data.get("choices") or []
    chunk: dict[str, Any] = {"usage": data.get("usage"), "choices": []}
    if choices and isinstance(choices[0], dict):
        first = choices[0]
        chunk["choices"] = [
            {"delta": first.get("message") or {}, "finish_reason": first.get("finish_reason") or "stop"}
            | ({"logprobs": first["logprobs"]} if first.get("logprobs") else {})
        ]
    answer.feed_chunk(chunk, lenient)
    answer.done = True


class StreamReading:
    """One streamed answer being read: its bytes through the SSE decoder into the assembler.

    Until the first event is read, the bytes are kept too (up to ``HEAD_KEPT``), so that a body
    that is not an event stream after all, though labelled one (a bare JSON error written into
    the stream by a proxy), is still read for what it says.
    """

    __slots__ = ("_head", "answer", "decoder")

    def __init__(self) -> None:
        self.answer = ChunkAssembler()
        self.decoder = SSEDecoder()
        self._head: bytes | None = b""

    def feed(self, raw: bytes) -> list[str]:
        """What the bytes complete, to stream; raises on an error event."""
        out: list[str] = []
        for data in self.decoder.feed(raw):
            out.extend(self.answer.feed(data))
            if self.answer.done:
                break
        if self._head is not None:
            self._head = None if self.answer.answered or len(self._head) > HEAD_KEPT else self._head + raw
        if self.decoder.error is not None:
            raise stream_error_event(self.decoder.error)
        return out

    def end(self, content_type: str) -> tuple[str, ...]:
        """The body ended: what was held back, to stream; raises when the answer is missing or bad."""
        head = (self._head or b"").lstrip()
        if not self.answer.answered and head[:1] in (b"{", b"<"):
            whole_body(self.answer, head, content_type, streamed=True)
        return self.answer.finish()


class ChunkReading(BaseOpenAIChatCompletionClient):
    """AutoGen's OpenAI client with every answer read by ``ChunkAssembler`` (``chunks.py``).

    What stays AutoGen's: the request (``_process_create_args`` converts messages, tools,
    ``tool_choice`` and the model's arguments, with every check it makes), structured output (a
    ``BaseModel`` as ``json_output`` goes through the SDK's beta stream, as AutoGen has it), usage
    totals. What is this class's: reading the answer, streamed or not, and the errors a 200 answer
    carries. The stock clients read the SDK's own HTTP response (httpx); the lean client reads its
    streams over aiohttp.
    """

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        params = self._process_create_args(messages, tools, tool_choice, json_output, extra_create_args)
        if params.response_format is not None:
            return await super().create(
                messages,
                tools=tools,
                tool_choice=tool_choice,
                json_output=json_output,
                extra_create_args=extra_create_args,
                cancellation_token=cancellation_token,
            )
        call = asyncio.ensure_future(
            self._client.chat.completions.with_raw_response.create(**self._sdk_args(params, stream=False))
        )
        if cancellation_token is not None:
            cancellation_token.link_future(call)
        response = await call
        answer = ChunkAssembler()
        http = response.http_response
        whole_body(answer, http.content, http.headers.get("content-type", ""), streamed=False)
        answer.finish()
        result = await self._settle(params, answer)
        if event_logger.isEnabledFor(logging.INFO):
            event_logger.info(
                LLMCallEvent(
                    messages=cast(list[dict[str, Any]], params.messages),
                    response=result.model_dump(),
                    prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens,
                )
            )
        return result

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
        if event_logger.isEnabledFor(logging.INFO):
            event_logger.info(LLMStreamStartEvent(messages=cast(list[dict[str, Any]], params.messages)))
        async for item in self._stream(params, cancellation_token):
            yield item

    def _sdk_args(self, params: CreateParams, *, stream: bool) -> dict[str, Any]:
        """The SDK's ``chat.completions.create`` arguments, as AutoGen passes them."""
        args: dict[str, Any] = {"messages": params.messages, "stream": stream, **params.create_args}
        if params.tools:
            args["tools"] = params.tools
        if not stream:
            args.pop("stream_options", None)
        return args

    async def _stream(
        self, params: CreateParams, cancellation_token: CancellationToken | None
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The stream, over the SDK's HTTP client: the SDK's request and refusals, this module's reading."""
        link = CancelLink(cancellation_token)
        reading = StreamReading()
        try:
            if link.cancelled:
                raise asyncio.CancelledError
            link.waiting = True
            try:
                args = self._sdk_args(params, stream=True)
                opened = self._client.chat.completions.with_streaming_response.create(**args)
                response = await opened.__aenter__()
            finally:
                link.waiting = False
            try:
                http = response.http_response
                content_type = http.headers.get("content-type", "")
                if "event-stream" not in content_type and ("json" in content_type or "html" in content_type):
                    link.waiting = True
                    try:
                        body = await http.aread()
                    finally:
                        link.waiting = False
                    whole_body(reading.answer, body, content_type, streamed=True)
                else:
                    reads = http.aiter_bytes()
                    while not reading.answer.done:
                        if link.cancelled:
                            raise asyncio.CancelledError
                        link.waiting = True
                        try:
                            raw = await anext(reads, b"")
                        finally:
                            link.waiting = False
                        if not raw:
                            break
                        for piece in reading.feed(raw):
                            yield piece
                for piece in reading.end(content_type):
                    yield piece
            finally:
                await opened.__aexit__(None, None, None)
        except asyncio.CancelledError:
            link.caught()  # the call is cancelled, not the task
            raise
        yield await self._settle(params, reading.answer)

    async def _settle(self, params: CreateParams, answer: ChunkAssembler) -> CreateResult:
        """The call's result: its usage as reported, or estimated; AutoGen's totals and log."""
        usage = answer.reported_usage() or await estimate(params.messages, params.tools, answer)
        result = answer.result(usage)
        if event_logger.isEnabledFor(logging.INFO):
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


def stream_error_event(data: bytes) -> ModelStreamError:
    """An ``error`` event or field of a stream (``SSEDecoder.error``), as a classified error."""
    try:
        parsed, _ = parse_event(data)
    except ModelStreamError:
        parsed = data.decode("utf-8", "replace")
    return provider_error(parsed)


class StockOpenAIChatCompletionClient(ChunkReading, OpenAIChatCompletionClient):
    """AutoGen's ``OpenAIChatCompletionClient`` (``SWARM_FAST_TOKENS=false``), its answers read here."""


class StockAzureOpenAIChatCompletionClient(ChunkReading, AzureOpenAIChatCompletionClient):
    """AutoGen's ``AzureOpenAIChatCompletionClient`` (``SWARM_FAST_TOKENS=false``), its answers read here."""


class LeanOpenAIChatCompletionClient(ChunkReading):
    """AutoGen's OpenAI client whose streams go over aiohttp (``StreamTransport``), not the SDK's httpx.

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
                raise status_error(self._client, refused) from None
            return response
        finally:
            link.waiting = False

    async def _read_all(self, response: aiohttp.ClientResponse, link: CancelLink) -> bytes:
        link.waiting = True
        try:
            return await response.read()
        except aiohttp.ClientError as exc:
            raise _broken_stream(exc) from exc
        finally:
            link.waiting = False

    async def _stream(
        self, params: CreateParams, cancellation_token: CancellationToken | None
    ) -> AsyncGenerator[str | CreateResult, None]:
        """The stream over aiohttp, each event's data handed to the assembler as bytes."""
        body, timeout = self._request(params)
        # AutoGen links a future per chunk to the token; one link per call does the same
        link = CancelLink(cancellation_token)
        try:
            response = await self._send(body, timeout, link)
        except asyncio.CancelledError:
            link.caught()
            raise
        reading = StreamReading()
        try:
            content_type = response.headers.get("content-type", "")
            if "event-stream" not in content_type and ("json" in content_type or "html" in content_type):
                whole_body(reading.answer, await self._read_all(response, link), content_type, streamed=True)
            else:
                reads = response.content
                while not reading.answer.done:
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
                    for piece in reading.feed(raw):
                        yield piece
                if reading.answer.done:
                    await _drain(reads)
            for piece in reading.end(content_type):
                yield piece
        except asyncio.CancelledError:
            link.caught()  # the call is cancelled, not the task
            raise
        finally:
            # back to the pool when the body was read to its end; closed otherwise
            response.release()
        yield await self._settle(params, reading.answer)
