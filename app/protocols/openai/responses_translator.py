"""A run's envelopes as Responses API events: a pure translation, one run at a time.

The answer is the team's final result: one ``message`` output item, sent whole when the run has
completed. Everything before it (each agent's messages as they stream, a model's own reasoning,
tool calls and results, hand-offs, chain steps) is a ``reasoning`` output item of its own
(``reasoning_text`` content), the closest construct the Responses API has for work done on the way
to an answer; ``include_reasoning=False`` leaves them out.

A run that needs a person ends its response as a model that calls a client's function does: a
``function_call`` item named ``human_input`` (its arguments: the agent and its prompt), and the
response ``completed``. The run itself waits. The next response answers it with a
``function_call_output`` and ``previous_response_id``; that response is the same run's log on from
the request's seq (``resumes_at``), up to the next request or the run's end.

Sequence numbers are derived from the log, never counted: the ``i``-th event an envelope of seq
``s`` becomes is numbered ``s * STRIDE + i``. Translating the same log again (a resume replays it
from its start, since the translator's state is the log's) gives every event the same number, so
the events after ``N`` are exactly those numbered above ``N``. The numbers grow but are not
contiguous. Per token the work is one dict and the protocol's own JSON frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from app.core.envelope import Envelope
from app.protocols.usage import UsageShare

# the most events one envelope may become (run.completed closing every open item is the most)
STRIDE = 1000
# envelopes that become a reasoning item in one go: a note of what happened
_NOTES = frozenset({"tool.call", "tool.result", "handoff", "step.started", "branch.failed"})
# the function a response "calls" when the run needs a person; its output is the person's answer
HUMAN_INPUT = "human_input"
CALL_PREFIX = "call_"


def sse(event: dict[str, Any]) -> bytes:
    """One event as one SSE frame, with its type as the ``event:`` line, as OpenAI sends them."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def response_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def call_id(request_id: str) -> str:
    """An input request as the ``call_id`` of its ``human_input`` call."""
    return CALL_PREFIX + request_id


def note(env: Envelope) -> str:
    """What a tool call, a hand-off or a step says, as one reasoning text."""
    data = env.data
    kind = env.type
    if kind == "tool.call":
        return f"**{data['agent']}** calls `{data['name']}({data['arguments']})`"
    if kind == "tool.result":
        failed = " (error)" if data.get("is_error") else ""
        return f"`{data['name']}`{failed} returned: {data['content']}"
    if kind == "handoff":
        return f"**{data['source']}** hands off to **{data['target']}**"
    if kind == "step.started":
        return f"Step {data['step']}: {', '.join(map(str, data.get('branches', [])))}"
    # branch.failed
    error = data.get("error") or {}
    return f"Branch {data['branch']} of step {data['step']} failed: {error.get('message', '')}"


class _Item:
    __slots__ = ("index", "item", "parts")

    def __init__(self, index: int, item: dict[str, Any]) -> None:
        self.index = index
        self.item = item
        self.parts: list[str] = []


class ResponsesTranslator:
    """Turns one run's envelopes, in seq order, into Responses API event dicts, and keeps the
    response object they build (``response()``)."""

    def __init__(
        self,
        response_id: str,
        model: str,
        created_at: int,
        *,
        include_reasoning: bool = True,
        background: bool = False,
        previous_response_id: str | None = None,
        metadata: dict[str, str] | None = None,
        resumes_at: int | None = None,
    ) -> None:
        self.response_id = response_id
        self.include_reasoning = include_reasoning
        # a response that answers a person's input: the run's log from the request's seq on
        self.resumes_at = resumes_at
        self.status = "queued"
        self.usage: dict[str, Any] | None = None
        self.waiting_on: str | None = None  # the call_id of the `human_input` call the response ended with
        self.waiting_seq: int | None = None  # and the seq of its input request
        self._share = UsageShare()  # this response's part of the run's usage
        self.error: dict[str, Any] | None = None
        self.completed_at: int | None = None
        self._static = {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "model": model,
            "background": background,
            "previous_response_id": previous_response_id,
            "metadata": metadata or {},
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": None,
            "instructions": None,
        }
        self._items: list[_Item] = []
        self._open: dict[str, _Item] = {}  # streaming items, by key (message id and piece)
        self._said: set[str] = set()  # messages whose text went out as deltas
        self._seq = 0
        self._i = 0

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @staticmethod
    def continuation_id(first_id: str, seq: int) -> str:
        """The id of the response that answers the input requested at ``seq`` of ``first_id``'s run."""
        return f"{first_id}-{seq}"

    def response(self) -> dict[str, Any]:
        """The response object as the events so far have built it."""
        output = []
        for it in self._items:
            item = dict(it.item)
            if item["type"] == "reasoning":
                item["content"] = [{"type": "reasoning_text", "text": "".join(it.parts)}]
            output.append(item)
        return {
            **self._static,
            "status": self.status,
            "output": output,
            "usage": self.usage,
            "error": self.error,
            "completed_at": self.completed_at,
        }

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        if self._i >= STRIDE:  # a bug: numbers would collide with the next envelope's
            raise RuntimeError(f"an envelope became more than {STRIDE} events")
        number = self._seq * STRIDE + self._i
        self._i += 1
        return {"type": kind, "sequence_number": number, **fields}

    def _lifecycle(self, kind: str) -> dict[str, Any]:
        return self._event(kind, response=self.response())

    def translate(self, env: Envelope) -> list[dict[str, Any]]:
        """The events ``env`` becomes (often none), numbered from its seq."""
        self._seq, self._i = env.seq, 0
        kind = env.type
        data = env.data
        if self.ended:  # a response ends at an input request or with the run; the log goes on without it
            return []
        if kind == "message.completed":
            self._share.count(data)
        if self.resumes_at is not None and env.seq <= self.resumes_at:
            return self._before_resume(env)
        if kind == "message.delta" or kind == "reasoning.delta":
            if not self.include_reasoning:
                return []
            message_id = data["message_id"]
            if kind == "message.delta":
                self._said.add(message_id)
            piece = "message" if kind == "message.delta" else "reasoning"
            key = f"{message_id}:{piece}"
            item = self._open.get(key)
            if item is not None:
                return [self._delta(item, data["text"])]
            heading = f"**{data['agent']}**: " if piece == "message" else f"**{data['agent']}** (thinking): "
            events, item = self._open_item(f"rs_{message_id}_{piece[0]}", key)
            events.append(self._delta(item, heading + data["text"]))
            return events
        if kind == "message.completed":
            if not self.include_reasoning or data.get("agent") == "user":
                return []
            message_id = data["message_id"]
            events = self._close(f"{message_id}:reasoning")
            if message_id in self._said:
                return events + self._close(f"{message_id}:message")
            # a message that was not streamed (AutoGen's own streaming path): its text whole
            return events + self._whole(f"rs_{message_id}_m", f"**{data['agent']}**: {data.get('text', '')}")
        if kind in _NOTES:
            return self._whole(f"rs_{env.run_id}_{env.seq}", note(env)) if self.include_reasoning else []
        if kind == "input.requested":
            return self._asks(env)
        if kind == "run.queued" or kind == "run.requeued":
            self.status = "queued"
            # a crash: what the lost attempt was streaming is abandoned (it is made again as a new item)
            first = [self._lifecycle("response.created")] if kind == "run.queued" else self._close_all("incomplete")
            return [*first, self._lifecycle("response.queued")]
        if kind == "run.started" or kind == "run.resumed":
            self.status = "in_progress"
            return [self._lifecycle("response.in_progress")]
        if kind == "run.completed":
            return self._completed(env)
        if kind == "run.failed" or kind == "run.cancelled":
            return self._ended(env)
        return []

    def _before_resume(self, env: Envelope) -> list[dict[str, Any]]:
        """The log before this response: nothing of it is sent. It names the response before this one
        (the one whose input request this one answers) and, at the request's own seq, opens this one."""
        if env.type != "input.requested":
            return []
        first = self.response_id.rpartition("-")[0]
        if env.seq < (self.resumes_at or 0):
            self._static["previous_response_id"] = self.continuation_id(first, env.seq)
            return []
        if self._static["previous_response_id"] is None:
            self._static["previous_response_id"] = first
        self.status = "in_progress"
        self._share.start()
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def _asks(self, env: Envelope) -> list[dict[str, Any]]:
        """A person's input requested: a `human_input` call ends the response; the run waits for its output."""
        data = env.data
        events = self._close_all("incomplete")  # a parallel branch's text goes on in the next response
        self.waiting_on = call_id(data["request_id"])
        self.waiting_seq = env.seq
        arguments = orjson.dumps({"agent": data["agent"], "prompt": data.get("prompt", "")}).decode()
        item_id = f"fc_{env.run_id}_{env.seq}"
        call = {
            "id": item_id,
            "type": "function_call",
            "call_id": self.waiting_on,
            "name": HUMAN_INPUT,
            "arguments": "",
            "status": "in_progress",
        }
        index = len(self._items)
        final = {**call, "arguments": arguments, "status": "completed"}
        events += [
            self._event("response.output_item.added", output_index=index, item=call),
            self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=arguments),
            self._event(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                arguments=arguments,
                name=HUMAN_INPUT,
            ),
            self._event("response.output_item.done", output_index=index, item=final),
        ]
        self._items.append(_Item(index, final))
        self.status = "completed"
        self.usage = self._usage(self._share.so_far())
        self.completed_at = int(env.at.timestamp())
        return [*events, self._lifecycle("response.completed")]

    @staticmethod
    def _usage(part: tuple[int, int]) -> dict[str, Any]:
        return response_usage({"prompt_tokens": part[0], "completion_tokens": part[1]})

    def _open_item(self, item_id: str, key: str | None) -> tuple[list[dict[str, Any]], _Item]:
        reasoning = {"id": item_id, "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
        item = _Item(len(self._items), reasoning)
        self._items.append(item)
        if key is not None:
            self._open[key] = item
        part = {"type": "reasoning_text", "text": ""}
        events = [
            self._event("response.output_item.added", output_index=item.index, item=dict(reasoning)),
            self._event(
                "response.content_part.added", item_id=item_id, output_index=item.index, content_index=0, part=part
            ),
        ]
        return events, item

    def _delta(self, item: _Item, text: str) -> dict[str, Any]:
        item.parts.append(text)
        return self._event(
            "response.reasoning_text.delta",
            item_id=item.item["id"],
            output_index=item.index,
            content_index=0,
            delta=text,
        )

    def _done(self, item: _Item, status: str = "completed") -> list[dict[str, Any]]:
        text = "".join(item.parts)
        item.item["status"] = status
        where = {"item_id": item.item["id"], "output_index": item.index, "content_index": 0}
        content = [{"type": "reasoning_text", "text": text}]
        return [
            self._event("response.reasoning_text.done", **where, text=text),
            self._event("response.content_part.done", **where, part=content[0]),
            self._event("response.output_item.done", output_index=item.index, item={**item.item, "content": content}),
        ]

    def _close(self, key: str, status: str = "completed") -> list[dict[str, Any]]:
        item = self._open.pop(key, None)
        return self._done(item, status) if item is not None else []

    def _whole(self, item_id: str, text: str) -> list[dict[str, Any]]:
        events, item = self._open_item(item_id, None)
        events.append(self._delta(item, text))
        return events + self._done(item)

    def _close_all(self, status: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for key in list(self._open):
            events.extend(self._close(key, status))
        return events

    def _completed(self, env: Envelope) -> list[dict[str, Any]]:
        events = self._close_all("incomplete")  # streamed, never completed (a model's thinking, say)
        text = (env.data.get("result") or {}).get("text") or ""
        message_id = f"msg_{env.run_id}"
        message = {"id": message_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        index = len(self._items)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": message_id, "output_index": index, "content_index": 0}
        done = {**part, "text": text}
        final = {**message, "status": "completed", "content": [done]}
        events += [
            self._event("response.output_item.added", output_index=index, item=message),
            self._event("response.content_part.added", **where, part=part),
            self._event("response.output_text.delta", **where, delta=text, logprobs=[]),
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=done),
            self._event("response.output_item.done", output_index=index, item=final),
        ]
        whole = _Item(index, final)
        self._items.append(whole)
        self.status = "completed"
        self.usage = self._usage(self._share.part(env.data.get("usage")))
        self.completed_at = int(env.at.timestamp())
        return [*events, self._lifecycle("response.completed")]

    def _ended(self, env: Envelope) -> list[dict[str, Any]]:
        events = self._close_all("incomplete")
        self.usage = self._usage(self._share.part(env.data.get("usage")))
        if env.type == "run.cancelled":
            self.status = "cancelled"  # as OpenAI's cancelled responses: no error
        else:
            # `code` is one of OpenAI's (the SDKs' models list them); the run's own is in the message
            self.status = "failed"
            error = env.data.get("error") or {}
            code = error.get("code", "run_failed")
            message = error.get("message") or "no message"
            self.error = {"code": "server_error", "message": f"The run failed ({code}): {message}"}
        return [*events, self._lifecycle("response.failed")]


def translate_run(envelopes: Iterable[Envelope], translator: ResponsesTranslator) -> list[dict[str, Any]]:
    """Every event a whole run becomes, in order."""
    events: list[dict[str, Any]] = []
    for env in envelopes:
        events.extend(translator.translate(env))
    return events
