"""A run's envelopes as Chat Completions chunks: a pure translation, one run at a time.

The answer (``content``) is the team's final result, which is known only once the run has
completed: it goes out in one chunk with ``run.completed``. Everything before it (each agent's
messages as they stream, a model's own reasoning, tool calls and results, hand-offs, chain
steps) goes out as ``reasoning_content`` deltas, which clients such as Open WebUI show folded.
The last agent message therefore streams as reasoning too before it is repeated as the answer.

A run that needs a person ends the completion with the question as its ``content`` (a chat app
shows it as the assistant's turn); the run waits. The next request pinned to the run's
conversation answers it with its last message, and its completion is the same run's log on from
the request's seq (``resumes_at``), up to the next question or the run's end.

Per token the work is one dict and the protocol's own JSON frame, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.core.envelope import Envelope
from app.protocols.usage import UsageShare

CHUNK = "chat.completion.chunk"
DONE = b"data: [DONE]\n\n"
# the ways a run ends without a result: an OpenAI error body in the stream
NO_RESULT = frozenset({"run.failed", "run.cancelled"})


def frame(chunk: dict[str, Any]) -> bytes:
    """One chunk as one SSE frame, as OpenAI sends them (no ``event:`` line)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def tokens(part: tuple[int, int]) -> dict[str, int]:
    """Prompt and completion tokens as OpenAI's ``usage``."""
    return openai_usage({"prompt_tokens": part[0], "completion_tokens": part[1]})


def openai_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def run_error(env: Envelope) -> dict[str, Any]:
    """The OpenAI error body of a run that ended without a result (``run.failed``, ``run.cancelled``)."""
    data = env.data
    if env.type == "run.cancelled":
        reason = data.get("reason", "cancelled")
        return {"message": f"The run was cancelled ({reason}).", "type": "server_error", "code": "run_cancelled"}
    error = data.get("error") or {}
    code = error.get("code", "run_failed")
    message = error.get("message") or "The run failed."
    return {"message": f"The run failed: {message}", "type": "server_error", "code": code}


class ChatTranslator:
    """Turns one run's envelopes, in seq order, into Chat Completions chunk dicts.

    ``include_reasoning=False`` leaves the inner turns out: the stream is then the answer alone.
    """

    __slots__ = (
        "_base",
        "_current",
        "_said",
        "_share",
        "_started",
        "asked",
        "include_reasoning",
        "include_usage",
        "resumes_at",
        "usage",
    )

    def __init__(
        self,
        completion_id: str,
        model: str,
        created: int,
        *,
        include_reasoning: bool = True,
        include_usage: bool = False,
        resumes_at: int | None = None,
    ) -> None:
        self._base = {"id": completion_id, "object": CHUNK, "created": created, "model": model}
        self.include_reasoning = include_reasoning
        self.include_usage = include_usage
        self._current: tuple[str, str] | None = None  # the (message_id, kind) streaming now
        self._said: set[str] = set()  # messages whose text went out as deltas
        self._started = False
        self.usage: dict[str, int] | None = None  # the completion's, once it has ended
        self.asked: str | None = None  # the request id of the question the completion ended with
        # a completion that answers a question: the run's log from the question's seq on
        self.resumes_at = resumes_at
        self._share = UsageShare()  # this completion's part of the run's usage

    @property
    def ended(self) -> bool:
        return self.usage is not None

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk = {**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _reasoning(self, text: str) -> list[dict[str, Any]]:
        return [self._chunk({"reasoning_content": text})] if self.include_reasoning and text else []

    def _heading(self, message_id: str, kind: str, agent: str) -> str:
        """The line that opens a new piece of an agent's turn, or nothing while the same piece goes on."""
        key = (message_id, kind)
        if self._current == key:
            return ""
        first = self._current is None
        self._current = key
        label = f"**{agent}**" + (" (thinking)" if kind == "reasoning" else "")
        return ("" if first else "\n\n") + label + ": "

    def _note(self, text: str) -> list[dict[str, Any]]:
        first = self._current is None
        self._current = ("", "note")
        return self._reasoning(("" if first else "\n\n") + text)

    def start(self) -> list[dict[str, Any]]:
        """The opening chunk: the assistant's role, as OpenAI's streams begin."""
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def translate(self, env: Envelope) -> list[dict[str, Any]]:
        """The chunks ``env`` becomes (often none)."""
        kind = env.type
        data = env.data
        if self.usage is not None:  # ended: at a question, or with the run
            return []
        if kind == "message.completed":
            self._share.count(data)
        if self.resumes_at is not None and env.seq <= self.resumes_at:
            if env.seq == self.resumes_at:
                self._share.start()
            return []
        if kind == "message.delta" or kind == "reasoning.delta":
            if not self.include_reasoning:
                return []
            message_id = data["message_id"]
            if kind == "message.delta":
                self._said.add(message_id)
            piece = "message" if kind == "message.delta" else "reasoning"
            return self._reasoning(self._heading(message_id, piece, data["agent"]) + data["text"])
        if kind == "message.completed":
            if data.get("agent") == "user" or data["message_id"] in self._said:
                return []
            # a message that was not streamed (AutoGen's own streaming path): its text whole
            return self._reasoning(self._heading(data["message_id"], "message", data["agent"]) + data.get("text", ""))
        if kind == "tool.call":
            return self._note(f"**{data['agent']}** calls `{data['name']}({data['arguments']})`")
        if kind == "tool.result":
            failed = " (error)" if data.get("is_error") else ""
            return self._note(f"`{data['name']}`{failed} returned: {data['content']}")
        if kind == "handoff":
            return self._note(f"**{data['source']}** hands off to **{data['target']}**")
        if kind == "step.started":
            return self._note(f"Step {data['step']}: {', '.join(map(str, data.get('branches', [])))}")
        if kind == "branch.failed":
            error = data.get("error") or {}
            return self._note(f"Branch {data['branch']} of step {data['step']} failed: {error.get('message', '')}")
        if kind == "input.requested":
            self.asked = data["request_id"]
            return self._ends(data.get("prompt") or f"{data['agent']} waits for your answer.", self._share.so_far())
        if kind == "run.completed":
            result = (env.data.get("result") or {}).get("text") or ""
            return self._ends(result, self._share.part(env.data.get("usage")))
        return []

    def part(self, usage: dict[str, Any] | None) -> dict[str, int]:
        """This completion's part of the run's ``usage``, in OpenAI's shape."""
        return tokens(self._share.part(usage))

    def _ends(self, text: str, part: tuple[int, int]) -> list[dict[str, Any]]:
        """The completion's end: ``text`` as its content (the team's result, or a person's question)."""
        self.usage = tokens(part)
        chunks = [self._chunk({"content": text})] if text else []
        chunks.append(self._chunk({}, "stop"))
        if self.include_usage:
            chunks.append({**self._base, "choices": [], "usage": self.usage})
        return chunks

    def frames(self, envelopes: Iterable[Envelope]) -> bytes:
        """``envelopes`` as SSE frames, written together; a failed or cancelled run ends with an error frame."""
        out: list[bytes] = [frame(c) for c in self.start()]
        for env in envelopes:
            if self.usage is not None:
                break
            if env.type in NO_RESULT:
                self.usage = self.part(env.data.get("usage"))
                out.append(frame({"error": {**run_error(env), "param": None}}))
            else:
                out.extend(frame(c) for c in self.translate(env))
            if self.usage is not None:  # the run's end, or a question
                out.append(DONE)
        return b"".join(out)


def translate_run(
    envelopes: Iterable[Envelope], completion_id: str, model: str, created: int, **options: bool
) -> list[dict[str, Any]]:
    """Every chunk a whole run becomes, in order (the error of a run that failed is not a chunk)."""
    translator = ChatTranslator(completion_id, model, created, **options)
    chunks = translator.start()
    for env in envelopes:
        chunks.extend(translator.translate(env))
    return chunks


def joined(chunks: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """The content and the reasoning of ``chunks``, each joined: the non-streaming answer."""
    content: list[str] = []
    reasoning: list[str] = []
    for chunk in chunks:
        for choice in chunk.get("choices", ()):
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
    return "".join(content), "".join(reasoning)
