"""Every model call goes through here: retries, a timeout, and a record of what it cost.

``GuardedModelClient`` wraps the provider's client. A call that fails with a
rate limit or a transient error (a refused or broken connection, a 5xx, a
stream that ends with no answer) is retried with exponential backoff and
jitter (tenacity), waiting at least as long as a 429's ``Retry-After`` asks,
but only before its first token: once text has streamed out it cannot be
taken back. ``timeout_s`` bounds the wait for the first token and every gap
between tokens after it (a stalled stream), not the length of a long answer.
Each call, answered, failed or cancelled, is reported to an observer as a
``ModelCall``; that is what run usage, analytics and metrics are built on.
Errors are classified here, by type, into the stable codes of ``ErrorCode``.

With a ``sink``, the fast token path: ``create`` (what an agent calls when it
does not stream) streams from the provider anyway and hands each text chunk to
the sink, which publishes it at once; the agent still gets one finished result.
Reasoning pieces (``chunks.Reasoning``) go to the sink too, and never to AutoGen
as text: the agent's streamed text is its answer alone.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import openai
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # type: ignore[attr-defined]
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from app.core.secrets import scrub_credentials
from app.engine.chunks import ErrorCode, EstimatedUsage, ModelStreamError, Reasoning, provider_error, readable
from app.engine.interrupts import StallWatch
from app.engine.pins import ReplyPins

# a call's record: how it failed, or that it was cancelled
CallEnd = ErrorCode | Literal["cancelled"]
# the longest Retry-After honoured; a provider that asks for more fails the call at once
RETRY_AFTER_MAX_S = 60.0


class CallCancelled:
    """How a call that was cancelled (its run cancelled or stopped) is recorded."""

    code: CallEnd = "cancelled"
    message = "The call was cancelled."


class ModelCallError(RuntimeError):
    """A model call that failed for good (after its retries): its stable code and a safe message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CallPolicy:
    timeout_s: float
    max_retries: int
    backoff_s: float
    backoff_max_s: float = 8.0


@dataclass(frozen=True, slots=True)
class ModelCall:
    agent: str
    model: str
    started_at: datetime
    duration_ms: int
    ttft_ms: int | None
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    error_code: CallEnd | None = None
    error_message: str | None = None
    usage_estimated: bool = False  # the provider reported none: counted here (``estimate.py``)


Observer = Callable[[ModelCall], None]
# the fast token path: (message id of this call, text chunk) -> published as a delta at once
TextSink = Callable[[str, str], None]


_STREAM_TAG = "swarm_stream_id"


def tag_stream(usage: RequestUsage, stream_id: str) -> None:
    """Mark a fast-path call's usage with the id its streamed chunks had. AutoGen hands a result's
    usage on, as the same object, to the message it makes of the result, so the message finds its
    deltas by it. The tag is not a field: the usage still equals, and is, what the provider reported."""
    fields = getattr(usage, "__dict__", None)
    if fields is not None:
        fields[_STREAM_TAG] = stream_id


def stream_of(usage: RequestUsage | None) -> str | None:
    """The id of the stream a usage's call had, when it was a fast-path call."""
    fields = getattr(usage, "__dict__", None)
    return None if fields is None else fields.get(_STREAM_TAG)


def usage_estimated(usage: RequestUsage | None) -> bool:
    """Whether a call's usage was counted here because the provider reported none."""
    return isinstance(usage, EstimatedUsage)


def error_code(exc: BaseException) -> ErrorCode:
    """The stable code of a failed call, by the error's type (and a refusal's status and body)."""
    if isinstance(exc, ModelCallError | ModelStreamError):
        return exc.code
    if isinstance(exc, TimeoutError | openai.APITimeoutError | httpx.TimeoutException):
        return "model_timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        return provider_error(exc.body or {}, status=exc.status_code).code
    return "model_error"


def is_retryable(exc: BaseException) -> bool:
    """Whether asking again may help: rate limits, timeouts, broken connections, 5xx, empty answers."""
    if isinstance(exc, ModelStreamError):
        return exc.retryable
    if isinstance(exc, openai.RateLimitError):
        after = retry_after(exc)
        return after is None or after <= RETRY_AFTER_MAX_S
    return isinstance(
        exc,
        TimeoutError
        | openai.APITimeoutError
        | openai.APIConnectionError
        | openai.InternalServerError
        | httpx.TransportError,  # a stream broken before its first token (connection reset, cut body)
    )


def retry_after(exc: BaseException) -> float | None:
    """How long a refusal asked to wait (``retry-after-ms``, ``retry-after`` in seconds or as a date)."""
    if isinstance(exc, ModelStreamError):
        return exc.retry_after
    response = getattr(exc, "response", None)
    if not isinstance(response, httpx.Response):
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        if value.strip().replace(".", "", 1).isdigit():
            return float(value)
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError):
        return None


def _safe_message(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"The model did not answer within {timeout_s:g} s."
    if isinstance(exc, ModelStreamError):
        return scrub_credentials(exc.message)[:500]
    if isinstance(exc, openai.APIStatusError):
        # the provider's own message, made readable (an HTML page becomes its title); never the request,
        # which holds the key in its headers
        said = provider_error(exc.body, status=exc.status_code).message if exc.body else readable(exc.message)
        said = said.removeprefix("The provider reported an error in its stream: ")
        text = f"{type(exc).__name__} ({exc.status_code}): {said}"
        after = retry_after(exc)
        if after is not None and after > RETRY_AFTER_MAX_S:
            text += f" The provider asked to retry after {after:g} s."
        return scrub_credentials(text)[:500]
    if isinstance(exc, httpx.TransportError | openai.APIConnectionError):
        cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
        return scrub_credentials(
            f"The connection to the provider failed: {readable(str(cause) or type(cause).__name__)}"
        )[:500]
    return scrub_credentials(readable(str(exc) or type(exc).__name__))[:500]


def _call_args(
    tools: Sequence[Tool | ToolSchema],
    tool_choice: Tool | Literal["auto", "required", "none"],
    json_output: bool | type[BaseModel] | None,
    extra_create_args: Mapping[str, Any],
    cancellation_token: CancellationToken | None,
) -> dict[str, Any]:
    """A call's arguments, passed on unchanged to the provider's client."""
    return {
        "tools": tools,
        "tool_choice": tool_choice,
        "json_output": json_output,
        "extra_create_args": extra_create_args,
        "cancellation_token": cancellation_token,
    }


class GuardedModelClient(ChatCompletionClient):
    def __init__(
        self,
        inner: ChatCompletionClient,
        policy: CallPolicy,
        *,
        agent: str,
        model: str,
        observer: Observer | None,
        sink: TextSink | None = None,
        pins: ReplyPins | None = None,
    ) -> None:
        self._inner = inner
        self._pins = pins  # a resumed turn's replies, given back without a call (``app/engine/pins.py``)
        self._policy = policy
        self._agent = agent
        self._model = model
        self._observer = observer
        self._sink = sink

    def _retrying(self) -> AsyncRetrying:
        backoff = wait_exponential_jitter(
            multiplier=self._policy.backoff_s, max=self._policy.backoff_max_s, jitter=self._policy.backoff_s
        )

        def wait(state: RetryCallState) -> float:
            # our backoff, or longer when the provider said how long to wait (a 429's Retry-After)
            delay: float = backoff(state)
            failure = state.outcome.exception() if state.outcome is not None else None
            after = retry_after(failure) if failure is not None else None
            return max(delay, after) if after is not None else delay

        return AsyncRetrying(
            stop=stop_after_attempt(self._policy.max_retries + 1),
            wait=wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )

    def _report(
        self,
        started: datetime,
        clock: float,
        attempts: int,
        *,
        ttft: float | None,
        usage: RequestUsage | None,
        error: ModelCallError | CallCancelled | None,
    ) -> None:
        if self._observer is None:
            return
        now = time.monotonic()
        self._observer(
            ModelCall(
                agent=self._agent,
                model=self._model,
                started_at=started,
                duration_ms=int((now - clock) * 1000),
                ttft_ms=int((ttft - clock) * 1000) if ttft is not None else None,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                attempts=attempts,
                error_code=error.code if error else None,
                error_message=error.message if error else None,
                usage_estimated=usage_estimated(usage),
            )
        )

    def _fail(self, exc: BaseException) -> ModelCallError:
        return ModelCallError(error_code(exc), _safe_message(exc, self._policy.timeout_s))

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
        if self._pins is not None and (pinned := self._pins.take(self._agent)) is not None:
            return pinned
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
        if self._sink is not None:
            # The fast token path: the agent asked for one finished answer, but the answer is streamed
            # from the provider here and every chunk goes straight to the sink, around AutoGen's
            # runtime (which would route each chunk as a message, at ~250 us of CPU apiece).
            message_id = str(uuid.uuid4())
            final: CreateResult | None = None
            async for item in self._stream(messages, args):
                if isinstance(item, str):
                    self._sink(message_id, item)  # answer text, or Reasoning
                else:
                    final = item
            if final is None:
                raise self._fail(RuntimeError("the model's stream ended without a result"))
            tag_stream(final.usage, message_id)
            return final
        started, clock, attempts = datetime.now(UTC), time.monotonic(), 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    async with asyncio.timeout(self._policy.timeout_s):
                        result = await self._inner.create(messages, **args)
        except asyncio.CancelledError:
            self._report(started, clock, attempts, ttft=None, usage=None, error=CallCancelled())
            raise
        except Exception as exc:
            failure = self._fail(exc)
            self._report(started, clock, attempts, ttft=None, usage=None, error=failure)
            raise failure from exc
        self._report(started, clock, attempts, ttft=time.monotonic(), usage=result.usage, error=None)
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
    ) -> AsyncGenerator[str | CreateResult, None]:
        """What an agent that streams itself gets (AutoGen's path): the answer's text, then the result;
        reasoning is left out (it arrives whole, as the result's thought)."""
        if self._pins is not None and (pinned := self._pins.take(self._agent)) is not None:
            yield pinned
            return
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
        async for item in self._stream(messages, args):
            if type(item) is not Reasoning:
                yield item

    async def _stream(
        self, messages: Sequence[LLMMessage], args: dict[str, Any]
    ) -> AsyncGenerator[str | CreateResult, None]:
        started, clock, attempts = datetime.now(UTC), time.monotonic(), 0
        timeout = self._policy.timeout_s
        stream: AsyncGenerator[str | CreateResult, None] | None = None
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    stream = self._inner.create_stream(messages, **args)
                    try:
                        async with asyncio.timeout(timeout):
                            first = await anext(stream)
                    except BaseException:
                        await stream.aclose()
                        raise
        except asyncio.CancelledError:
            self._report(started, clock, attempts, ttft=None, usage=None, error=CallCancelled())
            raise
        except Exception as exc:
            failure = self._fail(exc)
            self._report(started, clock, attempts, ttft=None, usage=None, error=failure)
            raise failure from exc
        assert stream is not None
        ttft = time.monotonic()
        item: str | CreateResult = first
        # the stall timeout: one lazily pushed-back timer for the stream, not one armed per token
        stall = StallWatch(timeout)
        try:
            while True:
                yield item
                if isinstance(item, CreateResult):
                    break
                stall.start()
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if stall.caught():
                        raise TimeoutError from None
                    raise
                finally:
                    stall.waiting = False
        except asyncio.CancelledError:
            self._report(started, clock, attempts, ttft=ttft, usage=None, error=CallCancelled())
            raise
        except GeneratorExit:
            # the consumer stopped reading: after the result, the call is done; before it, abandoned
            if isinstance(item, CreateResult):
                self._report(started, clock, attempts, ttft=ttft, usage=item.usage, error=None)
            else:
                self._report(started, clock, attempts, ttft=ttft, usage=None, error=CallCancelled())
            raise
        except Exception as exc:
            failure = self._fail(exc)
            self._report(started, clock, attempts, ttft=ttft, usage=None, error=failure)
            raise failure from exc
        finally:
            stall.close()
            await stream.aclose()
        self._report(
            started,
            clock,
            attempts,
            ttft=ttft,
            usage=item.usage if isinstance(item, CreateResult) else None,
            error=None,
        )

    # -- the rest is the inner client's ----------------------------------------------------------

    async def close(self) -> None:
        # nothing of ours to close: the provider client's HTTP client is shared and closed with the app
        return None

    def actual_usage(self) -> RequestUsage:
        return self._inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._inner.model_info  # type: ignore[return-value]

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info
