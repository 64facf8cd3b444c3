"""A deterministic, offline stand-in for an LLM provider.

Every test and demo of the server runs real AutoGen teams, and those teams need a
``ChatCompletionClient``. Talking to a real provider would make tests slow, flaky, costly and
dependent on a key, so this module provides ``FakeChatCompletionClient``: it produces replies that
depend only on its configuration and its inputs, streams them word by word with configurable
latency (to exercise streaming, back-pressure and cancellation paths), can follow a script of
replies, tool calls, handoffs and errors, and answers AutoGen's speaker-selection prompt so that
``SelectorGroupChat`` works too.

A fake model is named ``fake/<variant>`` by the rest of the server; ``parse_fake_variant`` turns
the ``<variant>`` part into a ``FakeVariant``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import warnings
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from app.engine.chunks import ErrorCode, ModelStreamError, Reasoning
from app.engine.specs import ScriptErrorKind, ScriptStepSpec, check_one_action

__all__ = [
    "FakeChatCompletionClient",
    "FakeModelError",
    "FakeStats",
    "FakeVariant",
    "ScriptStep",
    "ScriptToolCall",
    "parse_fake_variant",
]


class FakeModelError(ModelStreamError, RuntimeError):
    """Raised by a fake model call that was told to fail (scripted error or the ``fail`` variant).

    ``kind`` says what a real provider's error would have been: ``rate_limited`` and ``transient``
    ones are worth retrying, ``model_error`` is not. It is a ``ModelStreamError`` like a real
    provider's, so the model call classifies and retries it as one, knowing nothing of the fake.
    """

    def __init__(self, message: str, kind: ScriptErrorKind = "model_error") -> None:
        code: ErrorCode = "rate_limited" if kind == "rate_limited" else "model_error"
        super().__init__(code, message, retryable=kind != "model_error")
        self.kind: ScriptErrorKind = kind


# --------------------------------------------------------------------------------------------------
# Variant grammar
# --------------------------------------------------------------------------------------------------

MAX_WORDS = 100_000
MAX_DELAY_MS = 60_000

_GRAMMAR = (
    "expected 'default' or tokens joined by '-', each one of: "
    f"t<N> (words per reply, 1..{MAX_WORDS}), d<MS> (delay before each later chunk, 0..{MAX_DELAY_MS} ms), "
    f"f<MS> (delay before the first chunk, 0..{MAX_DELAY_MS} ms), end (append TERMINATE), "
    "fail (every call fails); e.g. 't64-d20-f50', 't8-end', 'default'"
)

# ASCII digits only: str.isdigit()/\d would also accept other Unicode digits.
_NUMBER_TOKEN = re.compile(r"([tdf])([0-9]+)")


@dataclass
class FakeVariant:
    """Behaviour of a fake model, parsed from the model part of ``fake/<variant>``."""

    words: int = 24
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    end: bool = False
    fail: bool = False


def _bad_variant(name: str, problem: str) -> ValueError:
    return ValueError(f"invalid fake model variant {name!r}: {problem}; {_GRAMMAR}")


def parse_fake_variant(name: str) -> FakeVariant:
    """Parse the part after ``fake/`` of a model name; raise ``ValueError`` with a user-facing message."""
    if name == "default":
        return FakeVariant()
    if not name:
        raise _bad_variant(name, "the variant is empty")

    variant = FakeVariant()
    seen: set[str] = set()
    for token in name.split("-"):
        if not token:
            raise _bad_variant(name, "empty token (two '-' in a row, or a leading/trailing '-')")
        match = _NUMBER_TOKEN.fullmatch(token)
        if match is None and token not in ("end", "fail"):
            raise _bad_variant(name, f"unknown token {token!r}")
        kind = match.group(1) if match else token
        if kind in seen:
            raise _bad_variant(name, f"token {token!r} repeats an earlier '{kind}' token")
        seen.add(kind)

        if match is None:
            if kind == "end":
                variant.end = True
            else:
                variant.fail = True
            continue

        digits = match.group(2)
        low, high = (1, MAX_WORDS) if kind == "t" else (0, MAX_DELAY_MS)
        # Check the length first so absurdly long numbers never reach int() (which limits digits).
        value = int(digits) if len(digits) <= 9 else high + 1
        if not low <= value <= high:
            raise _bad_variant(name, f"token {token!r} is out of range {low}..{high}")
        if kind == "t":
            variant.words = value
        elif kind == "d":
            variant.delay_s = value / 1000
        else:
            variant.first_delay_s = value / 1000
    return variant


# --------------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptToolCall:
    """A function call the fake model makes in a scripted step."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScriptStep:
    """One scripted model call; a fake client consumes its steps in order, one per call.

    The public schema that requests write (``app/agents/schemas.py``) documents and checks the
    fields; ``of`` reads one of those, or anything of its shape (``ScriptStepSpec``).
    """

    text: str | None = None
    reasoning: str | None = None  # streamed before the reply, apart from it
    tool_calls: Sequence[ScriptToolCall] | None = None
    handoff: str | None = None  # one call of the tool 'transfer_to_<handoff>'
    error: str | None = None
    error_kind: ScriptErrorKind = "model_error"
    hang: bool = False  # never answer (until cancelled or timed out)
    delay_ms: int | None = None  # before each chunk after the first: overrides the variant's delay

    def __post_init__(self) -> None:
        check_one_action(self)

    @classmethod
    def of(cls, step: ScriptStepSpec) -> ScriptStep:
        calls = step.tool_calls
        return cls(
            text=step.text,
            reasoning=step.reasoning,
            tool_calls=None if calls is None else [ScriptToolCall(c.name, c.arguments) for c in calls],
            handoff=step.handoff,
            error=step.error,
            error_kind=step.error_kind,
            hang=bool(step.hang),
            delay_ms=step.delay_ms,
        )


@dataclass
class FakeStats:
    """Counters shared by all fake clients of one server, so tests can observe model traffic."""

    calls: int = 0
    chunks: int = 0
    open_streams: int = 0
    last_message_count: int = 0
    # a testing aid (SWARM_FAKE_PROMPT_LOG): each call's prompt and reply, a JSON line apiece, so a test
    # can see what a model was sent, across processes and restarts
    prompt_log: Path | None = None

    def record(self, messages: Sequence[LLMMessage], reply: str | None, error: str | None = None) -> None:
        if self.prompt_log is None:
            return
        prompt = [[type(m).__name__, getattr(m, "source", None), "\n".join(_message_texts(m))] for m in messages]
        line = json.dumps({"prompt": prompt, "reply": reply, "error": error})
        with self.prompt_log.open("a", encoding="utf-8") as log:
            log.write(line + "\n")


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------

# Ordinary words only: nothing that looks like an agent name or a termination keyword.
_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "calm", "river",
    "runs", "past", "green", "hills", "and", "small", "birds", "sing", "in", "old", "trees", "near", "quiet",
    "houses",
)  # fmt: skip

_SELECTOR_MARKER = "select the next role from ["
_TOTAL_TOKENS = 1_000_000
_TOOL_CALL_TOKENS = 10
# How often a delayed stream checks its cancellation token while sleeping.
_CANCEL_POLL_S = 0.05
_NO_EXTRA_ARGS: Mapping[str, Any] = MappingProxyType({})


def _message_texts(message: LLMMessage) -> Iterator[str]:
    content: object = message.content
    if isinstance(content, str):
        yield content
        return
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(getattr(part, "content", None), str):
                # FunctionExecutionResult: the tool output the model would read.
                yield part.content


def _prompt_tokens(messages: Sequence[LLMMessage]) -> int:
    chars = sum(len(text) for message in messages for text in _message_texts(message))
    return max(1, chars // 4)


def _selector_candidates(messages: Sequence[LLMMessage]) -> list[str] | None:
    """First candidate list of an AutoGen selector prompt in ``messages``, or None if there is none."""
    for message in messages:
        for text in _message_texts(message):
            start = text.find(_SELECTOR_MARKER)
            while start != -1:
                bracket = start + len(_SELECTOR_MARKER) - 1
                # Names cannot contain ']' in AutoGen, but try each ']' so a stray one does not break us.
                close = text.find("]", bracket)
                while close != -1:
                    try:
                        value = ast.literal_eval(text[bracket : close + 1])
                    except (ValueError, SyntaxError, MemoryError, RecursionError):
                        value = None
                    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                        return list(value)
                    close = text.find("]", close + 1)
                start = text.find(_SELECTOR_MARKER, start + 1)
    return None


def _split_chunks(text: str) -> list[str]:
    """Split into one chunk per word, whitespace attached, so that joining gives back ``text`` exactly."""
    chunks = re.findall(r"\s*\S+\s*", text)
    if not chunks and text:
        return [text]
    return chunks


@dataclass
class _Reply:
    """What one call answers, decided up front so create and create_stream behave identically."""

    content: str | list[FunctionCall]
    usage: RequestUsage
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunks: list[str] = field(default_factory=list)
    hang: bool = False
    thought: str | None = None  # the reasoning of a text reply


class FakeChatCompletionClient(ChatCompletionClient):
    """A deterministic ``ChatCompletionClient`` that needs no network and no key.

    Each call uses the next unused ``ScriptStep`` of this client, or a generated reply once the
    script is exhausted. Generated replies read ``"Fake reply <n> after <m> messages: "`` followed by
    ``variant.words`` words (and ``TERMINATE`` for the ``end`` variant), where ``n`` is this client's
    1-based call number and ``m`` the number of messages sent. AutoGen selector prompts are answered
    with the first candidate name without consuming a script step.

    Deliberately not a declarative ``Component``: it is built in code from a model name and a
    script, never from a serialized config.
    """

    def __init__(
        self,
        variant: FakeVariant | None = None,
        *,
        script: Sequence[ScriptStep] = (),
        stats: FakeStats | None = None,
        function_calling: bool = True,
    ) -> None:
        self._variant = variant if variant is not None else FakeVariant()
        self._script = list(script)
        self._next_step = 0
        self._stats = stats if stats is not None else FakeStats()
        self._call_count = 0
        self._model_info = ModelInfo(
            vision=False,
            function_calling=function_calling,
            json_output=False,
            family=ModelFamily.UNKNOWN,
            structured_output=False,
        )
        self._last_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

    @property
    def variant(self) -> FakeVariant:
        return self._variant

    @property
    def stats(self) -> FakeStats:
        return self._stats

    # -- reply planning ---------------------------------------------------------------------------

    def _record_usage(self, usage: RequestUsage) -> None:
        self._last_usage = usage
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )

    def _plan(self, messages: Sequence[LLMMessage]) -> _Reply:
        """Count the call and decide its reply (recorded when the stats say so); raises FakeModelError."""
        try:
            reply = self._plan_reply(messages)
        except FakeModelError as exc:
            self._stats.record(messages, None, str(exc))
            raise
        if self._stats.prompt_log is not None:
            content = reply.content
            text = content if isinstance(content, str) else json.dumps([[c.name, c.arguments] for c in content])
            self._stats.record(messages, text)
        return reply

    def _plan_reply(self, messages: Sequence[LLMMessage]) -> _Reply:
        """Count the call and decide its reply; raises FakeModelError for failing calls."""
        if self._call_count == 0:
            # a client made for a team rebuilt mid-run (a parked run resumed) goes on from the agent's own
            # turns in its context, as a real model would: each earlier call left its reply there
            self._call_count = self._next_step = sum(isinstance(m, AssistantMessage) for m in messages)
        self._call_count += 1
        self._stats.calls += 1
        self._stats.last_message_count = len(messages)
        call_number = self._call_count
        prompt_tokens = _prompt_tokens(messages)

        if self._variant.fail:
            self._record_usage(RequestUsage(prompt_tokens=0, completion_tokens=0))
            raise FakeModelError("fake model failure (variant 'fail')")

        candidates = _selector_candidates(messages)
        if candidates is not None:
            # Selection is bookkeeping, not conversation: it must not eat script steps or add latency.
            name = candidates[0]
            usage = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=max(1, len(name.split())))
            self._record_usage(usage)
            return _Reply(content=name, usage=usage, first_delay_s=0.0, chunk_delay_s=0.0, chunks=[name])

        step: ScriptStep | None = None
        if self._next_step < len(self._script):
            step = self._script[self._next_step]
            self._next_step += 1

        chunk_delay_s = self._variant.delay_s
        if step is not None and step.delay_ms is not None:
            chunk_delay_s = step.delay_ms / 1000

        if step is not None and step.error is not None:
            self._record_usage(RequestUsage(prompt_tokens=0, completion_tokens=0))
            raise FakeModelError(step.error, step.error_kind)
        if step is not None and step.hang:
            return _Reply(content="", usage=RequestUsage(prompt_tokens=0, completion_tokens=0), hang=True)

        calls: Sequence[ScriptToolCall] | None = None
        if step is not None and step.handoff is not None:
            # AutoGen lower-cases handoff tool names (Handoff.name), so match it or the call misses.
            calls = [ScriptToolCall(name=f"transfer_to_{step.handoff}".lower())]
        elif step is not None and step.tool_calls is not None:
            calls = step.tool_calls
        if calls is not None:
            function_calls = [
                FunctionCall(
                    id=f"call_{call_number}_{index}", name=call.name, arguments=json.dumps(dict(call.arguments))
                )
                for index, call in enumerate(calls)
            ]
            usage = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=_TOOL_CALL_TOKENS * len(calls))
            self._record_usage(usage)
            return _Reply(
                content=function_calls,
                usage=usage,
                first_delay_s=self._variant.first_delay_s,
                chunk_delay_s=chunk_delay_s,
            )

        if step is not None and step.text is not None:
            text = step.text
        else:
            text = self._generated_text(call_number, len(messages))
        reasoning = step.reasoning if step is not None else None
        thinking: list[str] = [Reasoning(piece) for piece in _split_chunks(reasoning)] if reasoning else []
        usage = RequestUsage(
            prompt_tokens=prompt_tokens, completion_tokens=len(text.split()) + len((reasoning or "").split())
        )
        self._record_usage(usage)
        return _Reply(
            content=text,
            usage=usage,
            first_delay_s=self._variant.first_delay_s,
            chunk_delay_s=chunk_delay_s,
            chunks=[*thinking, *_split_chunks(text)],
            thought=reasoning or None,
        )

    def _generated_text(self, call_number: int, message_count: int) -> str:
        words = [_WORDS[i % len(_WORDS)] for i in range(self._variant.words)]
        if self._variant.end:
            words.append("TERMINATE")
        return f"Fake reply {call_number} after {message_count} messages: " + " ".join(words)

    @staticmethod
    def _result(reply: _Reply) -> CreateResult:
        finish_reason: Literal["stop", "function_calls"] = (
            "stop" if isinstance(reply.content, str) else "function_calls"
        )
        return CreateResult(
            finish_reason=finish_reason, content=reply.content, usage=reply.usage, cached=False, thought=reply.thought
        )

    @staticmethod
    def _check_cancelled(cancellation_token: CancellationToken | None) -> None:
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError("fake model call cancelled")

    @classmethod
    async def _sleep(cls, seconds: float, cancellation_token: CancellationToken | None) -> None:
        """Sleep, but notice a cancelled token within a poll interval instead of after a long delay."""
        if seconds <= 0:
            return
        if cancellation_token is None:
            await asyncio.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            cls._check_cancelled(cancellation_token)
            await asyncio.sleep(min(remaining, _CANCEL_POLL_S))

    @classmethod
    async def _hang_if(cls, reply: _Reply, cancellation_token: CancellationToken | None) -> None:
        while reply.hang:  # until cancelled, or timed out by the caller
            await cls._sleep(3600, cancellation_token)

    # -- ChatCompletionClient ---------------------------------------------------------------------

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_EXTRA_ARGS,
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        self._check_cancelled(cancellation_token)
        reply = self._plan(messages)
        await self._hang_if(reply, cancellation_token)
        # Non-streamed calls only model time-to-first-token; per-chunk delays are a streaming concern.
        await self._sleep(reply.first_delay_s, cancellation_token)
        self._check_cancelled(cancellation_token)
        return self._result(reply)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = _NO_EXTRA_ARGS,
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        self._stats.open_streams += 1
        try:
            self._check_cancelled(cancellation_token)
            reply = self._plan(messages)
            await self._hang_if(reply, cancellation_token)
            for index, chunk in enumerate(reply.chunks):
                await self._sleep(reply.first_delay_s if index == 0 else reply.chunk_delay_s, cancellation_token)
                self._check_cancelled(cancellation_token)
                self._stats.chunks += 1
                yield chunk
            if not reply.chunks:
                # Tool calls stream no text, but still take time to arrive.
                await self._sleep(reply.first_delay_s, cancellation_token)
                self._check_cancelled(cancellation_token)
            yield self._result(reply)
        finally:
            self._stats.open_streams -= 1

    async def close(self) -> None:
        pass

    def actual_usage(self) -> RequestUsage:
        return self._last_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return _prompt_tokens(messages)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return max(0, _TOTAL_TOKENS - self.count_tokens(messages, tools=tools))

    @property
    def capabilities(self) -> ModelCapabilities:
        warnings.warn("capabilities is deprecated, use model_info instead", DeprecationWarning, stacklevel=2)
        return self._model_info

    @property
    def model_info(self) -> ModelInfo:
        return self._model_info
