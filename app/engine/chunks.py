"""One reading of an OpenAI-compatible chat-completions stream, whoever serves it.

Both model clients feed each server-sent event's data to a ``ChunkAssembler``: the lean client
(``openai_stream.py``, over aiohttp) and AutoGen's stock client (``SWARM_FAST_TOKENS=false``, over
the openai SDK's httpx client). It says what to stream, and at the end builds the ``CreateResult``
or raises a ``ModelStreamError`` with a stable code. AutoGen's own chunk loop
(``BaseOpenAIChatCompletionClient.create_stream``) is not used: the variants below, which real
servers send, break it. ``tests/providers/`` replays recorded streams of each through both clients.

- **Tool-call parts** are matched by ``index``; without one (Gemini's OpenAI endpoint), a part with
  a new ``id`` starts a call and a part with neither continues the last one. An ``id`` or a
  ``function.name`` repeated in every part (Fireworks, NVIDIA NIM, DeepSeek, Qwen) is kept once,
  not concatenated. A delta may carry text and tool calls together (Ollama); both are read. A
  reply with both ``tool_calls`` and the deprecated ``function_call`` (llama-cpp-python) is read by
  its ``tool_calls``.
- **Errors inside a 200 stream** fail the call: ``{"error": {...}}`` events (OpenAI, OpenRouter),
  vLLM's flat ``{"object": "error", ...}``, an ``error`` SSE event or field (llama.cpp; see
  ``sse.py``), a stream that ends with no answer, or before its ``finish_reason`` and ``[DONE]``,
  and ``finish_reason: content_filter`` (Azure), which is ``content_filtered``.
- **Usage** is the last ``usage`` object of the stream, wherever it comes (LiteLLM may send it
  before the last chunk); when there is none, the client estimates it (``EstimatedUsage``).
- **Reasoning** (``reasoning_content``: DeepSeek, llama.cpp; ``reasoning``: vLLM, OpenRouter,
  Ollama; or an answer that opens with an inline ``<think>`` block) is streamed as ``Reasoning``
  pieces, apart from the answer's text: the text pieces join to exactly the answer.
- **Text is made valid**: a UTF-16 surrogate pair split over two events (``"\\ud83d"`` then
  ``"\\ude00"``) is joined, and a lone surrogate or invalid UTF-8 becomes U+FFFD, so nothing a
  provider sends can make a stored message impossible to encode.

The per-token path (``feed``) is a JSON parse and a few dictionary reads.
"""

from __future__ import annotations

import html
import json
import re
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from autogen_core import FunctionCall
from autogen_core.models import ChatCompletionTokenLogprob, CreateResult, RequestUsage, TopLogprob

from app.patches.autogen_ext_private import normalize_stop_reason

ErrorCode = Literal["rate_limited", "model_timeout", "content_filtered", "model_error"]
MESSAGE_LIMIT = 300  # characters of a provider's own message kept in an error
EMPTY_CHUNK_WARNING_THRESHOLD = 10  # AutoGen's
OPEN_THINK, CLOSE_THINK = "<think>", "</think>"
UNDECIDED, INSIDE, ANSWER = 0, 1, 2  # an inline think block: not known yet, being read, none or over
HTML_HEAD = re.compile(rb"^\s*(<!doctype html|<html|<head|<body|<title|<h1|<center)", re.IGNORECASE)
TITLE = re.compile(r"<title[^>]*>(.*?)</title>|<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
TAG = re.compile(r"<[^>]+>")


class Reasoning(str):
    """A streamed piece of a model's reasoning, not of its answer (a ``str``, for AutoGen's checks)."""

    __slots__ = ()


@dataclass
class EstimatedUsage(RequestUsage):
    """Usage counted here with a tokenizer because the provider reported none."""


class ModelStreamError(Exception):
    """What a provider's answer said went wrong (or what is wrong with the answer), classified."""

    def __init__(
        self, code: ErrorCode, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


def readable(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A provider's text as one short line: an HTML page becomes its title, and the rest is cut."""
    if HTML_HEAD.match(text.encode()[:200]):
        return html_summary(text)
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def html_summary(page: str) -> str:
    """An HTML page (a proxy's or a gateway's error page) said in a few words, never its markup."""
    found = TITLE.search(page)
    title = (
        " ".join(html.unescape(TAG.sub(" ", next(g for g in found.groups() if g is not None))).split()) if found else ""
    )
    title = title[:120]
    return f'an HTML page ("{title}")' if title else "an HTML page"


def _classify(status: Any, code: Any, kind: Any, message: str) -> tuple[ErrorCode, bool]:
    """An error's stable code, and whether asking again may help, from what the provider said."""
    words = f"{code} {kind}".lower()
    if status == 429 or "429" in words or "rate_limit" in words or "rate limit" in message.lower():
        return "rate_limited", True
    if "content_filter" in words or "content_policy" in words:
        return "content_filtered", False
    if status in (408, 504) or "timeout" in words:
        return "model_timeout", True
    transient = status in (500, 502, 503) or any(w in words for w in ("server_error", "overloaded", "unavailable"))
    return "model_error", transient


def provider_error(body: Any, *, status: int | None = None, where: str = "in its stream") -> ModelStreamError:
    """An error object a provider sent, as a classified error with its own message, made readable.

    Shapes: ``{"error": {"message", "type", "code"}}`` (OpenAI, OpenRouter, llama.cpp), ``{"error":
    "text"}`` (LM Studio), ``{"object": "error", "message", "type", "code"}`` (vLLM), or any JSON.
    """
    error = body.get("error", body) if isinstance(body, Mapping) else body
    if isinstance(error, Mapping):
        message = error.get("message") or error.get("detail") or json.dumps(error)[:MESSAGE_LIMIT]
        code, kind = error.get("code"), error.get("type")
        status = status if status is not None else error.get("status")
    else:
        message, code, kind = str(error), None, None
    message = readable(str(message))
    classified, retryable = _classify(status, code, kind, message)
    return ModelStreamError(classified, f"The provider reported an error {where}: {message}", retryable=retryable)


def parse_event(data: bytes) -> tuple[Any, bool]:
    """An event's JSON, and whether it had to be read leniently (then its text may need mending)."""
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8", "replace")  # invalid UTF-8 becomes U+FFFD
    try:
        return json.loads(text), True  # the standard library reads lone surrogate escapes
    except ValueError:
        raise ModelStreamError(
            "model_error", f"The provider sent an event that is not JSON: {readable(text, 120)}"
        ) from None


def valid_text(text: str) -> str:
    """``text`` with its surrogate pairs joined and every lone surrogate replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _is_high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


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


class ChunkAssembler:
    """One model call's stream: ``feed`` each event's data, ``finish`` at its end, then ``result``."""

    __slots__ = (
        "_carry",
        "_held",
        "_inline",
        "_last_call",
        "_reason_carry",
        "answered",
        "calls",
        "content",
        "done",
        "empty_chunks",
        "finish_reason",
        "logprobs",
        "reasoning",
        "usage",
        "warned",
    )

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[Any, FunctionCall] = {}
        self.usage: Mapping[str, Any] | None = None
        self.finish_reason: str | None = None
        self.logprobs: list[ChatCompletionTokenLogprob] | None = None
        self.answered = False  # a chunk with a choice came
        self.done = False  # [DONE] came
        self.empty_chunks = 0
        self.warned = False
        self._inline = UNDECIDED
        self._held = ""  # answer text held back while it may still open or close an inline think block
        self._carry = ""  # a high surrogate at the end of the last text piece, waiting for its pair
        self._reason_carry = ""
        self._last_call: Any = None

    # -- the stream ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> tuple[str, ...]:
        """Read one event's data; what to stream of it (answer text as ``str``, or ``Reasoning``)."""
        if data[:6] == b"[DONE]":
            self.done = True
            return ()
        if not data:
            return ()  # an event with an empty data line
        chunk, lenient = parse_event(data)
        if type(chunk) is not dict:
            raise ModelStreamError("model_error", f"The provider sent an event that is not an object: {data[:80]!r}")
        return self.feed_chunk(chunk, lenient)

    def feed_chunk(self, chunk: dict[str, Any], lenient: bool = False) -> tuple[str, ...]:
        """Read one parsed chunk (``lenient``: parsed by the standard library, its text to mend)."""
        if chunk.get("error"):
            raise provider_error(chunk)
        if chunk.get("object") == "error":
            raise provider_error(chunk)
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        elif "x_groq" in chunk:
            # Groq, before it read stream_options: usage in its own extension field of the last chunk
            usage = (chunk["x_groq"] or {}).get("usage")
            if usage:
                self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            self._empty()
            return ()
        self.empty_chunks = 0
        self.answered = True
        if len(choices) > 1 and not self.warned:
            self.warned = True
            warnings.warn(f"A chunk with {len(choices)} choices: only the first is read.", UserWarning, stacklevel=2)
        choice = choices[0]
        finish = choice.get("finish_reason")
        if finish:
            self.finish_reason = finish
        delta = choice.get("delta")
        if not delta:
            return ()  # Azure's annotation chunks carry content_filter_results and no delta
        out: tuple[str, ...] = ()
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            out = self._reason(reasoning, lenient)
        text = delta.get("content")
        if text and type(text) is str:
            out = out + self._say(text, lenient) if out else self._say(text, lenient)
        parts = delta.get("tool_calls")
        if parts:
            self._tool_parts(parts, lenient)
        elif delta.get("function_call"):
            self._tool_parts([{"index": "function_call", "function": delta["function_call"]}], lenient)
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("content"):
            self.logprobs = [*(self.logprobs or ()), *_logprobs(logprobs["content"])]
        return out

    def _empty(self) -> None:
        # empty chunks come from endpoints under heavy load (AutoGen issue 4213), and as usage chunks
        self.empty_chunks += 1
        if self.empty_chunks == EMPTY_CHUNK_WARNING_THRESHOLD:
            warnings.warn(
                f"Received more than {EMPTY_CHUNK_WARNING_THRESHOLD} consecutive empty chunks. "
                "Empty chunks are being ignored.",
                stacklevel=3,
            )

    def _say(self, text: str, lenient: bool) -> tuple[str, ...]:
        if lenient or self._carry:
            text, self._carry = self._mend(self._carry + text)
            if not text:
                return ()
        if self._inline != ANSWER:
            return self._inline_think(text)
        self.content.append(text)
        return (text,)

    def _reason(self, text: str, lenient: bool) -> tuple[str, ...]:
        if lenient or self._reason_carry:
            text, self._reason_carry = self._mend(self._reason_carry + text)
            if not text:
                return ()
        self.reasoning.append(text)
        return (Reasoning(text),)

    @staticmethod
    def _mend(text: str) -> tuple[str, str]:
        """Valid text, and a high surrogate held back from its end (its pair may start the next piece)."""
        carry = ""
        if text and _is_high_surrogate(text[-1]):
            text, carry = text[:-1], text[-1]
        return valid_text(text), carry

    def _inline_think(self, text: str) -> tuple[str, ...]:
        """The answer's first text, read for a ``<think>`` block that opens it (a reasoning model
        served without a reasoning parser), and the block itself, up to its ``</think>``."""
        held = self._held + text
        if self._inline == UNDECIDED:
            head = held.lstrip()
            if self.reasoning or not (OPEN_THINK.startswith(head) or head.startswith(OPEN_THINK)):
                self._inline, self._held = ANSWER, ""
                return self._answer(held)
            if not head.startswith(OPEN_THINK):
                self._held = held  # whitespace, or a part of "<think>": wait for more
                return ()
            self._inline, held = INSIDE, head[len(OPEN_THINK) :]
        end = held.find(CLOSE_THINK)
        if end >= 0:
            self._inline, self._held = ANSWER, ""
            return self._thought(held[:end]) + self._answer(held[end + len(CLOSE_THINK) :])
        keep = next(
            (n for n in range(min(len(held), len(CLOSE_THINK) - 1), 0, -1) if CLOSE_THINK.startswith(held[-n:])), 0
        )
        self._held = held[len(held) - keep :] if keep else ""
        return self._thought(held[: len(held) - keep])

    def _answer(self, text: str) -> tuple[str, ...]:
        if not text:
            return ()
        self.content.append(text)
        return (text,)

    def _thought(self, text: str) -> tuple[str, ...]:
        if not text:
            return ()
        self.reasoning.append(text)
        return (Reasoning(text),)

    def _tool_parts(self, parts: Any, lenient: bool) -> None:
        for part in parts:
            if type(part) is not dict:
                continue
            function = part.get("function") or {}
            call_id, name = part.get("id") or None, function.get("name") or None
            key = part.get("index")
            if key is None:
                # no index (Gemini): an id not seen yet starts a call; no id continues the last one,
                # unless it names another function
                if call_id is not None:
                    key = ("id", call_id)
                else:
                    last = self.calls.get(self._last_call)
                    fresh = last is None or (name is not None and last.name and name != last.name)
                    key = ("n", len(self.calls)) if fresh else self._last_call
            call = self.calls.get(key)
            if call is None:
                call = self.calls[key] = FunctionCall(id="", arguments="", name="")
            self._last_call = key
            if call_id is not None and not call.id:
                call.id = str(call_id)
            if name is not None and name != call.name:
                call.name = name if not call.name else call.name + name  # a name sent in pieces is joined
            arguments = function.get("arguments")
            if arguments:
                if not isinstance(arguments, str):
                    arguments = orjson.dumps(arguments).decode()  # an object, not its JSON text
                call.arguments += valid_text(arguments) if lenient else arguments

    # -- the end ---------------------------------------------------------------------------------

    def finish(self) -> tuple[str, ...]:
        """The stream ended (at ``[DONE]`` or the end of its body): what was held back, to stream;
        raises when the answer is missing, cut short or filtered."""
        out: tuple[str, ...] = ()
        if self._carry:
            out += self._answer("\ufffd")
        if self._reason_carry:
            out += self._thought("\ufffd")
        if self._held:
            held, self._held = self._held, ""
            out += self._thought(held) if self._inline == INSIDE else self._answer(held)
        if not self.answered:
            raise ModelStreamError(
                "model_error",
                "The provider's stream ended without an answer"
                + (
                    " (an empty body: some servers send nothing when they cannot stream a reply, "
                    "for instance one with tools)."
                    if not self.done and self.usage is None
                    else "."
                ),
                retryable=True,
            )
        if not self.done and self.finish_reason is None:
            raise ModelStreamError(
                "model_error",
                "The provider's stream ended before the answer was finished (no finish_reason and no [DONE]).",
                retryable=True,
            )
        if self.finish_reason == "content_filter":
            raise ModelStreamError(
                "content_filtered", "The provider's content filter stopped the answer (finish_reason content_filter)."
            )
        for call in self.calls.values():
            if not call.name:
                raise ModelStreamError("model_error", "The provider sent a tool call without a function name.")
        return out

    def reported_usage(self) -> RequestUsage | None:
        if not self.usage:
            return None
        return RequestUsage(
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=int(self.usage.get("completion_tokens") or 0),
        )

    def result(self, usage: RequestUsage) -> CreateResult:
        """The call's result, after ``finish``: text or tool calls, the thought, the finish reason."""
        text = "".join(self.content)
        content: str | list[FunctionCall]
        if self.calls:
            content = list(self.calls.values())
            for call in content:
                call.id = call.id or f"call_{uuid.uuid4().hex[:24]}"  # a legacy function_call has none
            thought = text or None  # text beside tool calls is the thought, as AutoGen has it
        else:
            content = text
            thought = "".join(self.reasoning) or None
        stop = "function_calls" if self.finish_reason == "function_call" else normalize_stop_reason(self.finish_reason)
        return CreateResult(
            finish_reason=stop, content=content, usage=usage, cached=False, logprobs=self.logprobs, thought=thought
        )
