"""Our run envelopes as AG-UI events: the one place that knows how the two vocabularies meet.

``Translator`` is a pure function of the envelopes it is given, in order: it keeps only what the
protocol needs remembered between events (the open text messages, the open subagents, the open
steps), never reads anything else, and gives back the official package's event models. Each
agent turn is a subagent (``SUBAGENT_STARTED``/``SUBAGENT_FINISHED``); in a chain every branch of
a step is one, and they may overlap. Hand-offs, speaker selection and the rest of what AG-UI has no
event for go out as namespaced ``CUSTOM`` events. A request for a person ends the stream as a
``RUN_FINISHED`` with an interrupt outcome: AG-UI's run is over, ours waits. A model's own
reasoning (``reasoning.delta``) is a reasoning span of one reasoning message inside its agent's
subagent, closed when the agent's answer starts, its call ends in tool calls or its turn ends. The
mapping is tabled in ``docs/protocols.md``.

Deltas are the hot path: the delta of a message already open is written straight to its
``TEXT_MESSAGE_CONTENT`` (or ``REASONING_MESSAGE_CONTENT``) frame (``Translator.delta_frame``: one
dict and one ``orjson.dumps``, the same JSON the package's model makes, which a test holds), with no
model built per token.
"""

from __future__ import annotations

from typing import Any

import orjson
from ag_ui.core import (
    AssistantMessage,
    BaseEvent,
    CustomEvent,
    Interrupt,
    MessagesSnapshotEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedInterruptOutcome,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    StepFinishedEvent,
    StepStartedEvent,
    SubagentFinishedEvent,
    SubagentStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)

from app.core.envelope import DELTA, REASONING_DELTA, Envelope
from app.protocols.usage import UsageShare

PROTOCOL_VERSION = "1.0"
CUSTOM_PREFIX = "swarmdirector."
# our events AG-UI has no event for, sent as CUSTOM under these names (their data as the value)
CUSTOM_NAMES = {
    "handoff": "handoff",
    "speaker.selected": "speaker_selected",
    "input.received": "input_received",
    "branch.failed": "branch_failed",
    "run.requeued": "run_requeued",
    "run.resumed": "run_resumed",
}


def _ms(env: Envelope) -> int:
    return int(env.at.timestamp() * 1000)


# what a tool approval's `resume[].payload` is: our decision (``POST /v1/runs/{id}/input``'s fields)
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"enum": ["approve", "reject", "edit"]},
        "arguments": {"type": "object", "description": "With `edit`: the arguments the call runs with."},
        "reason": {"type": "string", "description": "A note; on `reject`, what the model is told."},
    },
    "required": ["decision"],
    "additionalProperties": False,
}


def _interrupt(run_id: str, data: dict[str, Any]) -> Interrupt:
    """An input request as an AG-UI interrupt: a person's answer (`input_required`, a text payload), or a
    tool call's approval (`tool_approval`, bound to the call, a decision payload: ``DECISION_SCHEMA``)."""
    ident = interrupt_id(run_id, data["request_id"])
    prompt = data.get("prompt") or None
    if data.get("kind") == "approval":
        tool = data["tool"]
        return Interrupt(
            id=ident,
            reason="tool_approval",
            message=prompt,
            tool_call_id=tool.get("call_id"),
            response_schema=DECISION_SCHEMA,
            metadata={"agent": data["agent"], "tool": tool},
        )
    return Interrupt(id=ident, reason="input_required", message=prompt, metadata={"agent": data["agent"]})


def interrupt_id(run_id: str, request_id: str) -> str:
    """An input request as an AG-UI interrupt id: our run's id and the request's, so a ``resume`` names both."""
    return f"{run_id}/{request_id}"


def _tokens(part: tuple[int, int]) -> list[TokenUsage]:
    prompt, completion = part
    return [TokenUsage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)]


def token_usage(usage: dict[str, Any] | None) -> list[TokenUsage] | None:
    """A run's ``usage`` as AG-UI's: an entry per provider and model (``by_model``), which add up to the
    run's total; one entry, the total, where the event has no breakdown (a lost run's settling event)."""
    if not usage:
        return None
    models = usage.get("by_model")
    if models:
        return [
            TokenUsage(
                provider=model["model"].partition("/")[0],
                model=model["model"].partition("/")[2] or None,
                input_tokens=model["prompt_tokens"],
                output_tokens=model["completion_tokens"],
                total_tokens=model["prompt_tokens"] + model["completion_tokens"],
            )
            for model in models
        ]
    return _tokens((int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))))


def snapshot(history: list[tuple[str, str, str]], at: int) -> MessagesSnapshotEvent:
    """Stored messages as AG-UI's: each task is the user's, every agent's (a user proxy too) an assistant's."""
    messages: list[Any] = [
        UserMessage(id=mid, content=text) if agent == "user" else AssistantMessage(id=mid, name=agent, content=text)
        for mid, agent, text in history
    ]
    return MessagesSnapshotEvent(messages=messages, timestamp=at)


class Translator:
    """The AG-UI events of one run's stream, envelope by envelope.

    ``thread_id`` and ``run_id`` are the client's (AG-UI names them, and every run event echoes
    them). A stream that starts after seq 1 (a reconnect) still opens with ``RUN_STARTED``.
    ``history``: the thread's messages before the stream's first event, as ``(id, agent, text)``, for a
    resumed or reconnected stream: sent as ``MESSAGES_SNAPSHOT`` after ``RUN_STARTED``.
    ``spent``: the prompt and completion tokens of the run's messages before the stream's first
    event; an interrupt's usage is what the messages spent up to it. ``resumed``: the stream resumes
    the run after an interrupt, and AG-UI counts a resumed run's own usage only, so its usage is the
    run's less ``spent``.
    """

    def __init__(
        self,
        thread_id: str,
        run_id: str,
        history: list[tuple[str, str, str]] | None = None,
        spent: tuple[int, int] = (0, 0),
        *,
        resumed: bool = False,
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.history = history
        self.share = UsageShare(spent, starts_here=resumed)  # this stream's part of the run's usage
        self.started = False
        self.finished = False
        self.turns = 0  # subagent invocations so far: each gets an id of its own
        self.current: str | None = None  # the open subagent outside any chain step (one at a time)
        self.subagents: dict[tuple[str, int | None, str | None], str] = {}  # open: (agent, step, branch) → id
        self.messages: dict[str, str] = {}  # open text messages → their subagent
        # open reasoning, by the message id of the model call it belongs to → (reasoning message id, subagent)
        self.reasoning: dict[str, tuple[str, str]] = {}
        # the seq the stream starts from, in every reasoning message's id: reasoning a stream replays (a
        # reconnect) is a message of its own, never appended to one a client kept from a cut stream
        self.origin: int | None = None
        self.steps: list[str] = []  # open steps, by name

    def __call__(self, env: Envelope) -> list[BaseEvent]:
        if self.finished:
            return []
        out: list[BaseEvent] = []
        at = _ms(env)
        if not self.started:
            self.started = True
            self.origin = env.seq
            out.append(
                RunStartedEvent(
                    thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION, timestamp=at
                )
            )
            if self.history is not None:
                out.append(snapshot(self.history, at))
        data = env.data
        match env.type:
            case "message.delta":
                text = data["text"]
                if text:  # an empty delta is a keep-alive to AG-UI, and a warning to its validator
                    mid = data["message_id"]
                    owner = self._open_message(out, mid, data, at)
                    out.append(
                        TextMessageContentEvent.model_construct(
                            message_id=mid, delta=text, subagent_run_id=owner, timestamp=at
                        )
                    )
            case "reasoning.delta":
                text = data["text"]
                if text:  # AG-UI's reasoning deltas are non-empty
                    rid, owner = self._open_reasoning(out, data, at)
                    out.append(
                        ReasoningMessageContentEvent.model_construct(
                            message_id=rid, delta=text, subagent_run_id=owner, timestamp=at
                        )
                    )
            case "message.completed":
                self.share.count(data)
                self._message(out, data, at)
            case "tool.call":
                owner = self._subagent(out, data, at)
                self._end_reasoning(out, owner, at)  # the call that reasoned ended in tool calls
                call_id = data["call_id"]
                out.append(
                    ToolCallStartEvent(
                        tool_call_id=call_id, tool_call_name=data["name"], subagent_run_id=owner, timestamp=at
                    )
                )
                if data["arguments"]:
                    out.append(
                        ToolCallArgsEvent(
                            tool_call_id=call_id, delta=data["arguments"], subagent_run_id=owner, timestamp=at
                        )
                    )
                out.append(ToolCallEndEvent(tool_call_id=call_id, subagent_run_id=owner, timestamp=at))
            case "tool.result":
                owner = self._subagent(out, data, at)
                out.append(
                    ToolCallResultEvent(
                        message_id=f"{data['call_id']}-result",
                        tool_call_id=data["call_id"],
                        content=data["content"],
                        role="tool",
                        subagent_run_id=owner,
                        timestamp=at,
                    )
                )
            case "input.requested":
                # AG-UI's human in the loop: this stream ends, paused; a new run's `resume` answers it
                self._end_all(out, at)
                request = _interrupt(env.run_id, data)
                out.append(
                    RunFinishedEvent(
                        thread_id=self.thread_id,
                        run_id=self.run_id,
                        outcome=RunFinishedInterruptOutcome(interrupts=[request]),
                        usage=_tokens(self.share.so_far()),
                        timestamp=at,
                    )
                )
                self.finished = True
            case "step.started":
                self._end_turn(out, at)
                name = f"step {data['step']}"
                self.steps.append(name)
                out.append(StepStartedEvent(step_name=name, timestamp=at))
            case "step.completed":
                self._end_step(out, f"step {data['step']}", at)
            case "run.completed":
                self._end_all(out, at)
                result = data.get("result")
                out.append(
                    RunFinishedEvent(
                        thread_id=self.thread_id,
                        run_id=self.run_id,
                        outcome=RunFinishedSuccessOutcome(),
                        result=result.get("text") if isinstance(result, dict) else None,
                        usage=self._usage(data.get("usage")),
                        timestamp=at,
                    )
                )
            case "run.cancelled":
                self._end_all(out, at)
                out.append(
                    RunFinishedEvent(
                        thread_id=self.thread_id,
                        run_id=self.run_id,
                        outcome=RunFinishedCancelledOutcome(),
                        usage=self._usage(data.get("usage")),
                        timestamp=at,
                    )
                )
            case "run.failed":
                self._end_all(out, at)
                error = data.get("error") or {}
                out.append(
                    RunErrorEvent(
                        message=error.get("message") or "The run failed.",
                        code=error.get("code"),
                        usage=self._usage(data.get("usage")),
                        timestamp=at,
                    )
                )
            case "run.queued" | "run.started":
                pass  # RUN_STARTED is sent above
            case "run.requeued":
                # the lost attempt's open messages end here; the event names those it abandoned, and the
                # resumed run (``run.resumed``) makes the interrupted turn again as a new message
                self._end_all(out, at)
                out.append(CustomEvent(name=CUSTOM_PREFIX + CUSTOM_NAMES[env.type], value=data, timestamp=at))
            case _:
                custom = CUSTOM_NAMES.get(env.type)
                if custom is not None:
                    by = self._subagent(out, data, at) if "agent" in data else None
                    out.append(CustomEvent(name=CUSTOM_PREFIX + custom, value=data, subagent_run_id=by, timestamp=at))
        if env.terminal:
            self.finished = True
        return out

    def delta_frame(self, env: Envelope) -> bytes | None:
        """The frame of a delta of a message already open (``b""`` for an empty one); ``None``: not such a
        delta, translate it as any other event."""
        data = env.data
        owner = self.messages.get(data["message_id"])
        if owner is None or self.finished:
            return None
        if not data["text"]:
            return b""
        content = {
            "type": "TEXT_MESSAGE_CONTENT",
            "timestamp": _ms(env),
            "subagentRunId": owner,
            "messageId": data["message_id"],
            "delta": data["text"],
        }
        return b"data: " + orjson.dumps(content) + b"\n\n"

    def _usage(self, usage: dict[str, Any] | None) -> list[TokenUsage] | None:
        """The usage of this stream's AG-UI run: the run's per model; a resumed run's part of it as one
        entry (what came before is not known per model)."""
        if not usage or not self.share.resumed:
            return token_usage(usage)
        return _tokens(self.share.part(usage))

    def reasoning_frame(self, env: Envelope) -> bytes | None:
        """``delta_frame`` for a ``reasoning.delta`` of reasoning already open."""
        data = env.data
        opened = self.reasoning.get(data["message_id"])
        if opened is None or self.finished:
            return None
        if not data["text"]:
            return b""
        content = {
            "type": "REASONING_MESSAGE_CONTENT",
            "timestamp": _ms(env),
            "subagentRunId": opened[1],
            "messageId": opened[0],
            "delta": data["text"],
        }
        return b"data: " + orjson.dumps(content) + b"\n\n"

    # -- turns (subagents) ---------------------------------------------------------------------

    def _subagent(self, out: list[BaseEvent], data: dict[str, Any], at: int) -> str:
        """The subagent the event belongs to, started now if it is a new turn (closing the last)."""
        agent = str(data.get("agent") or data.get("source") or "team")
        step, branch = data.get("step"), data.get("branch")
        key = (agent, step, None if branch is None else str(branch))
        found = self.subagents.get(key)
        if found is not None and (step is not None or found == self.current):
            return found
        if step is None:
            self._end_turn(out, at)
        self.turns += 1
        sid = f"{self.run_id}-turn-{self.turns}"
        self.subagents[key] = sid
        if step is None:
            self.current = sid
        out.append(SubagentStartedEvent(subagent_run_id=sid, name=agent, timestamp=at))
        return sid

    def _finish(self, out: list[BaseEvent], sid: str, at: int) -> None:
        self._end_reasoning(out, sid, at)
        for mid in [m for m, owner in self.messages.items() if owner == sid]:
            out.append(TextMessageEndEvent(message_id=mid, subagent_run_id=sid, timestamp=at))
            del self.messages[mid]
        out.append(SubagentFinishedEvent(subagent_run_id=sid, timestamp=at))

    def _end_turn(self, out: list[BaseEvent], at: int) -> None:
        if self.current is not None:
            sid, self.current = self.current, None
            self.subagents = {k: v for k, v in self.subagents.items() if v != sid}
            self._finish(out, sid, at)

    def _end_step(self, out: list[BaseEvent], name: str, at: int) -> None:
        for key, sid in list(self.subagents.items()):
            if key[1] is not None:
                del self.subagents[key]
                self._finish(out, sid, at)
        if name in self.steps:
            self.steps.remove(name)
            out.append(StepFinishedEvent(step_name=name, timestamp=at))

    def _end_all(self, out: list[BaseEvent], at: int) -> None:
        self._end_turn(out, at)
        for name in list(reversed(self.steps)):
            self._end_step(out, name, at)
        for sid in list(self.subagents.values()):
            self._finish(out, sid, at)
        self.subagents.clear()
        for mid, sid in self.messages.items():  # deltas of a message the run never completed
            out.append(TextMessageEndEvent(message_id=mid, subagent_run_id=sid, timestamp=at))
        self.messages.clear()

    # -- reasoning -----------------------------------------------------------------------------

    def _open_reasoning(self, out: list[BaseEvent], data: dict[str, Any], at: int) -> tuple[str, str]:
        """The open reasoning of the model call ``data`` streams for, opened now (a span and its one
        message) if it is the call's first."""
        mid = data["message_id"]
        opened = self.reasoning.get(mid)
        if opened is not None:
            return opened
        owner = self._subagent(out, data, at)
        rid = f"{mid}-reasoning-{self.origin}"
        self.reasoning[mid] = opened = (rid, owner)
        out.append(ReasoningStartEvent(message_id=rid + "-span", subagent_run_id=owner, timestamp=at))
        out.append(ReasoningMessageStartEvent(message_id=rid, subagent_run_id=owner, timestamp=at))
        return opened

    def _end_reasoning(self, out: list[BaseEvent], sid: str, at: int) -> None:
        """Close the open reasoning of subagent ``sid``: its model call answers, calls tools or is over."""
        if not self.reasoning:
            return
        for mid, (rid, owner) in list(self.reasoning.items()):
            if owner == sid:
                out.append(ReasoningMessageEndEvent(message_id=rid, subagent_run_id=owner, timestamp=at))
                out.append(ReasoningEndEvent(message_id=rid + "-span", subagent_run_id=owner, timestamp=at))
                del self.reasoning[mid]

    # -- text messages -------------------------------------------------------------------------

    def _open_message(self, out: list[BaseEvent], mid: str, data: dict[str, Any], at: int) -> str:
        if mid in self.messages:
            return self.messages[mid]
        owner = self._subagent(out, data, at)
        self._end_reasoning(out, owner, at)  # the answer starts: the reasoning before it is over
        self.messages[mid] = owner
        out.append(
            TextMessageStartEvent(
                message_id=mid, role="assistant", name=data["agent"], subagent_run_id=owner, timestamp=at
            )
        )
        return owner

    def _message(self, out: list[BaseEvent], data: dict[str, Any], at: int) -> None:
        if data["agent"] == "user":
            return  # the run's task: the client sent it
        mid = data["message_id"]
        if mid not in self.messages:  # not streamed: the whole text at once
            owner = self._open_message(out, mid, data, at)
            if data.get("text"):
                out.append(
                    TextMessageContentEvent(message_id=mid, delta=data["text"], subagent_run_id=owner, timestamp=at)
                )
        owner = self.messages.pop(mid)
        out.append(TextMessageEndEvent(message_id=mid, subagent_run_id=owner, timestamp=at))


def frame(event: BaseEvent) -> bytes:
    """One event as an SSE frame: ``data:`` and its JSON, as AG-UI's own encoder writes it."""
    return b"data: " + event.model_dump_json(by_alias=True).encode() + b"\n\n"


def frames(translate: Translator, batch: list[Envelope]) -> bytes:
    """A batch of envelopes as one write of AG-UI frames."""
    out: list[bytes] = []
    for env in batch:
        kind = env.type
        fast = (
            translate.delta_frame(env)
            if kind == DELTA
            else translate.reasoning_frame(env)
            if kind == REASONING_DELTA
            else None
        )
        if fast is not None:
            out.append(fast)
        else:
            out.extend(frame(event) for event in translate(env))
    return b"".join(out)
