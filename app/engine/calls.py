"""Every model call goes through here: retries, a timeout, and a record of what it cost.

``GuardedModelClient`` wraps the provider's client. A call that fails with a
rate limit or a transient error is retried with exponential backoff and
jitter (tenacity), but only before its first token: once text has streamed
out it cannot be taken back. ``timeout_s`` bounds the wait for the first
token and every gap between tokens after it (a stalled stream), not the
length of a long answer. Each call, answered or not, is reported to an
observer as a ``ModelCall``; that is what analytics and metrics are built on.

With a ``sink``, the fast token path: ``create`` (what an agent calls when it
does not stream) streams from the provider anyway and hands each text chunk to
the sink, which publishes it at once; the agent still gets one finished result.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from app.core.secrets import scrub_credentials
from app.engine.fake import FakeModelError
from app.engine.interrupts import StallWatch

ErrorCode = Literal["rate_limited", "model_timeout", "model_error"]


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
    error_code: ErrorCode | None = None
    error_message: str | None = None


Observer = Callable[[ModelCall], None]
# the fast token path: (message id of this call, text chunk) -> published as a delta at once
TextSink = Callable[[str, str], None]


def error_code(exc: BaseException) -> ErrorCode:
    if isinstance(exc, ModelCallError):
        return exc.code
    if isinstance(exc, TimeoutError | openai.APITimeoutError):
        return "model_timeout"
    if isinstance(exc, openai.RateLimitError) or (isinstance(exc, FakeModelError) and exc.kind == "rate_limited"):
        return "rate_limited"
    return "model_error"


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, FakeModelError):
        return exc.retryable
    return isinstance(
        exc,
        TimeoutError
        | openai.RateLimitError
        | openai.APITimeoutError
        | openai.APIConnectionError
        | openai.InternalServerError,
    )


def _safe_message(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"The model did not answer within {timeout_s:g} s."
    if isinstance(exc, openai.APIStatusError):
        # the provider's own message; never the request (which holds the key in its headers)
        return scrub_credentials(f"{type(exc).__name__} ({exc.status_code}): {exc.message}")[:500]
    return scrub_credentials(str(exc) or type(exc).__name__)[:500]


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
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._agent = agent
        self._model = model
        self._observer = observer
        self._sink = sink

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self._policy.max_retries + 1),
            wait=wait_exponential_jitter(
                multiplier=self._policy.backoff_s, max=self._policy.backoff_max_s, jitter=self._policy.backoff_s
            ),
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
        error: ModelCallError | None,
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
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
        if self._sink is not None:
            # The fast token path: the agent asked for one finished answer, but the answer is streamed
            # from the provider here and every chunk goes straight to the sink, around AutoGen's
            # runtime (which would route each chunk as a message, at ~250 us of CPU apiece).
            message_id = str(uuid.uuid4())
            final: CreateResult | None = None
            async for item in self.create_stream(messages, **args):
                if isinstance(item, str):
                    self._sink(message_id, item)
                else:
                    final = item
            if final is None:
                raise self._fail(RuntimeError("the model's stream ended without a result"))
            return final
        started, clock, attempts = datetime.now(UTC), time.monotonic(), 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    async with asyncio.timeout(self._policy.timeout_s):
                        result = await self._inner.create(messages, **args)
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
        args = _call_args(tools, tool_choice, json_output, extra_create_args, cancellation_token)
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
