"""The run events as typed schemas: one envelope per event type, joined as a union on ``type``.

The run path never builds these (it emits plain dicts, the hottest code in the
house); they exist so that the OpenAPI document, and every client generated
from it, knows exactly what each event carries. The tests hold every event
the server emits to them (``tests/docs/test_event_schemas.py``). Payloads
allow fields they do not list: a later version may add some, and a client
must not break on them.
``branch`` and ``step`` are set on events of a chain's parallel steps. The
run's outcome shapes (``Usage``, ``RunError``, ``RunResult``) live here too,
since the terminal events carry them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, RootModel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = Field(
        default=False,
        description="True when some of these counts were estimated by the server (a tokenizer's count), "
        "because the provider reported no usage for a model call.",
    )


class RunError(BaseModel):
    code: str = Field(
        description="Stable: `model_error`, `rate_limited`, `model_timeout`, `timed_out`, `invalid_spec`, ..."
    )
    message: str


class RunResult(BaseModel):
    message_id: str
    agent: str
    text: str = Field(description="The last message of the run.")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


def _absent(value: object) -> bool:
    return value is None


def _optional(json_type: str, description: str) -> Any:
    """A field that is absent, never null, when not set: the page of stored events echoes what was stored."""

    def schema(s: dict[str, Any]) -> None:
        s.clear()
        s.update({"type": json_type, "description": description})

    return Field(default=None, exclude_if=_absent, json_schema_extra=schema)


def _not_null(description: str) -> Any:
    """The schema of an optional field of a structured type: its type, never null (absent when not set)."""

    def schema(s: dict[str, Any]) -> None:
        (kind,) = [option for option in s.pop("anyOf") if option.get("type") != "null"]
        s.pop("default", None)
        s.update({**kind, "description": description})

    return schema


def _branch() -> Any:
    return _optional("string", "Set on events of a chain's parallel step: the branch that emitted it.")


def _step() -> Any:
    return _optional("integer", "Set on events of a chain: the step that emitted it.")


def _lost_after_seq() -> Any:
    return _optional(
        "integer",
        "Present when the run's executor was lost (`server_restarted`, `worker_lost`): the last seq of the "
        "stored log. Events a watcher was sent after it and before this one were never stored: drop what was "
        "shown of them. This event's seq is past every seq that was sent.",
    )


class ModelUsage(BaseModel):
    """The run's calls of one model, summed."""

    model: str = Field(description="`provider/model`, as the agents' specs name it.", examples=["openai/gpt-4o-mini"])
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RunUsage(BaseModel):
    """A terminal event's usage: the sum of the run's model calls, as the run's own."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = Field(
        description="True when some calls' counts are the server's estimate (their provider reported no usage)."
    )
    by_model: list[ModelUsage] | None = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_not_null(
            "The same per model, by model name; absent when the run made no model call, and on the event that "
            "settles a run whose process was lost."
        ),
    )


class TokenUsage(BaseModel):
    prompt_tokens: int = Field(description="Prompt tokens of the model call that wrote the message.")
    completion_tokens: int = Field(description="Completion tokens of that call.")
    estimated: bool | None = _optional(
        "boolean", "Present (true) when the provider reported no usage and these counts are the server's estimate."
    )


class RunQueuedData(_Payload):
    conversation_id: str
    team: str = Field(description="The team's name.")
    task: str


class RunRequeuedData(_Payload):
    reason: Literal["worker_lost", "server_restarted"] = Field(
        description="Why the run goes back to the queue: its worker was lost, or the embedded server restarted."
    )
    attempt: int = Field(description="The attempt that was lost (1 for the first).")
    max_attempts: int = Field(description="How many attempts the run may have (`retries` + 1).")
    lost_after_seq: int | None = _lost_after_seq()
    abandoned_message_ids: list[str] = Field(
        default_factory=list,
        description=(
            "Messages the lost attempt had begun to stream and never completed: their deltas stay in the log, "
            "and no `message.completed` will ever come for these ids. Drop the text shown for them; the "
            "resumed run makes the interrupted turn again, as a new message."
        ),
    )


class RunResumedData(_Payload):
    attempt: int = Field(description="This attempt (2 for the first resume).")
    checkpoint_seq: int | None = Field(
        description=(
            "The last event of the turn the run resumes after (its checkpoint); null: no turn had ended, "
            "the run resumes from its task."
        )
    )


class RunStartedData(_Payload):
    team: str = Field(description="The team's name.")
    agents: list[str] = Field(description="The team's agents, by name.")


class MessageDeltaData(_Payload):
    message_id: str = Field(description="The id of the message this piece belongs to.")
    agent: str
    text: str = Field(description="One streamed piece; the pieces of a message, joined, are its text.")
    branch: str | None = _branch()
    step: int | None = _step()


class ReasoningDeltaData(_Payload):
    message_id: str = Field(
        description="The model call's message: its `message.completed`, if the call wrote one, has this id and "
        "the joined reasoning as `reasoning`."
    )
    agent: str
    text: str = Field(description="One streamed piece of the model's reasoning; never part of the message's text.")
    branch: str | None = _branch()
    step: int | None = _step()


class MessageCompletedData(_Payload):
    message_id: str
    agent: str = Field(description="Who wrote it: an agent, or `user` for the task.")
    type: str = Field(
        description="AutoGen message type, e.g. `TextMessage`, `HandoffMessage`; `ThoughtEvent` for the text a "
        "model said before its tool calls."
    )
    text: str
    position: int = Field(description="1-based place in the conversation.")
    usage: TokenUsage
    reasoning: str | None = _optional(
        "string", "The model's reasoning before this message (reasoning models), when it gave any."
    )
    branch: str | None = _branch()
    step: int | None = _step()


class ToolCallData(_Payload):
    agent: str
    call_id: str
    name: str = Field(description="The tool's name in the server's registry.")
    arguments: str = Field(description="The arguments as a JSON string, as the model wrote them.")
    branch: str | None = _branch()
    step: int | None = _step()


class ToolResultData(_Payload):
    agent: str
    call_id: str = Field(description="The `call_id` of the `tool.call` it answers.")
    name: str
    content: str
    is_error: bool
    branch: str | None = _branch()
    step: int | None = _step()


class HandoffData(_Payload):
    message_id: str
    source: str = Field(description="The agent handing off.")
    target: str = Field(description="The agent taking over, or `user` for a person.")
    branch: str | None = _branch()
    step: int | None = _step()


class SpeakerSelectedData(_Payload):
    agents: list[str] = Field(description="Who a selector team picked to speak next.")
    branch: str | None = _branch()
    step: int | None = _step()


class ApprovalToolCall(BaseModel):
    name: str = Field(description="The tool's name in the server's registry.")
    call_id: str | None = Field(description="The `call_id` of the `tool.call` waiting for the decision.")
    arguments: dict[str, Any] = Field(description="The arguments the model asked for.")


class InputRequestedData(_Payload):
    request_id: str = Field(description="Answer with this id (`POST /v1/runs/{id}/input`).")
    agent: str = Field(description="Who asks: the user proxy, the agent handing off to `user`, the tool's caller.")
    prompt: str
    kind: Literal["input", "approval"] | None = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_not_null(
            "`input`: a person's answer is asked for (`content`); `approval`: a decision on a tool's call "
            "(`decision`: approve, reject or edit). Absent (events stored before it existed, a parked run's "
            "request): `input`."
        ),
    )
    tool: ApprovalToolCall | None = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_not_null("With kind `approval`: the call waiting for the decision."),
    )
    branch: str | None = _branch()
    step: int | None = _step()


class InputReceivedData(_Payload):
    request_id: str
    agent: str
    content: str = Field(
        description="The person's answer; for an approval, the decision as the conversation's history tells it."
    )
    decision: Literal["approve", "reject", "edit"] | None = Field(
        default=None, exclude_if=_absent, json_schema_extra=_not_null("Present for an approval: the decision.")
    )
    arguments: dict[str, Any] | None = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_not_null("With the decision `edit`: the arguments the call ran with."),
    )
    reason: str | None = _optional("string", "With a decision: the person's note (on `reject`, the model is told).")
    branch: str | None = _branch()
    step: int | None = _step()


class StepStartedData(_Payload):
    step: int = Field(description="1-based step of a chain (the synthesizer's is the last).")
    branches: list[str] = Field(description="The step's branches: one, or a parallel group.")


class StepCompletedData(_Payload):
    step: int
    outputs: dict[str, str] = Field(description="Each branch's output (its last message), by branch.")


class BranchFailedData(_Payload):
    step: int
    branch: str
    error: RunError


class RunCompletedData(_Payload):
    status: Literal["succeeded"]
    stop_reason: str | None = Field(default=None, description="Why the team stopped.")
    result: RunResult | None = Field(default=None, description="The last message written by an agent.")
    usage: RunUsage
    duration_ms: int


class RunFailedData(_Payload):
    status: Literal["failed", "timed_out"]
    error: RunError
    usage: RunUsage
    duration_ms: int
    lost_after_seq: int | None = _lost_after_seq()


class RunCancelledData(_Payload):
    status: Literal["cancelled"]
    reason: str = Field(
        description="`cancelled`, `interrupted` (by a newer run), `shutdown`, or `worker_lost` (lease taken over)."
    )
    usage: RunUsage
    duration_ms: int
    lost_after_seq: int | None = _lost_after_seq()


class _Envelope(BaseModel):
    run_id: str
    seq: int = Field(
        description=(
            "Dense per run: 1, 2, 3, ...; the SSE `id`. One jump: the event that settles a run whose "
            "executor was lost carries `lost_after_seq`, and nothing is stored between."
        )
    )
    at: str = Field(description="UTC time, ISO 8601 with milliseconds.", examples=["2026-11-24T10:00:00.123Z"])


class RunQueuedEvent(_Envelope):
    type: Literal["run.queued"]
    data: RunQueuedData


class RunRequeuedEvent(_Envelope):
    """The process executing the run died (a lost worker, an embedded restart) and the run asked for
    retries: it goes back to the queue, and `run.resumed` follows when a process takes it."""

    type: Literal["run.requeued"]
    data: RunRequeuedData


class RunResumedEvent(_Envelope):
    """A requeued run goes on, on whichever process took it: from its last whole turn (its committed
    messages stay, and are not made again), the interrupted turn's model call made again."""

    type: Literal["run.resumed"]
    data: RunResumedData


class RunStartedEvent(_Envelope):
    type: Literal["run.started"]
    data: RunStartedData


class MessageDeltaEvent(_Envelope):
    type: Literal["message.delta"]
    data: MessageDeltaData


class ReasoningDeltaEvent(_Envelope):
    type: Literal["reasoning.delta"]
    data: ReasoningDeltaData


class MessageCompletedEvent(_Envelope):
    type: Literal["message.completed"]
    data: MessageCompletedData


class ToolCallEvent(_Envelope):
    type: Literal["tool.call"]
    data: ToolCallData


class ToolResultEvent(_Envelope):
    type: Literal["tool.result"]
    data: ToolResultData


class HandoffEvent(_Envelope):
    type: Literal["handoff"]
    data: HandoffData


class SpeakerSelectedEvent(_Envelope):
    type: Literal["speaker.selected"]
    data: SpeakerSelectedData


class InputRequestedEvent(_Envelope):
    type: Literal["input.requested"]
    data: InputRequestedData


class InputReceivedEvent(_Envelope):
    type: Literal["input.received"]
    data: InputReceivedData


class StepStartedEvent(_Envelope):
    type: Literal["step.started"]
    data: StepStartedData


class StepCompletedEvent(_Envelope):
    type: Literal["step.completed"]
    data: StepCompletedData


class BranchFailedEvent(_Envelope):
    """A branch of a chain that tolerates failures failed; the others go on."""

    type: Literal["branch.failed"]
    data: BranchFailedData


class RunCompletedEvent(_Envelope):
    type: Literal["run.completed"]
    data: RunCompletedData


class RunFailedEvent(_Envelope):
    type: Literal["run.failed"]
    data: RunFailedData


class RunCancelledEvent(_Envelope):
    type: Literal["run.cancelled"]
    data: RunCancelledData


EVENT_MODELS: tuple[type[_Envelope], ...] = (
    RunQueuedEvent,
    RunRequeuedEvent,
    RunResumedEvent,
    RunStartedEvent,
    MessageDeltaEvent,
    ReasoningDeltaEvent,
    MessageCompletedEvent,
    ToolCallEvent,
    ToolResultEvent,
    HandoffEvent,
    SpeakerSelectedEvent,
    InputRequestedEvent,
    InputReceivedEvent,
    StepStartedEvent,
    StepCompletedEvent,
    BranchFailedEvent,
    RunCompletedEvent,
    RunFailedEvent,
    RunCancelledEvent,
)

EVENT_TYPES: list[str] = [get_args(m.model_fields["type"].annotation)[0] for m in EVENT_MODELS]

AnyRunEvent = Annotated[
    RunQueuedEvent
    | RunRequeuedEvent
    | RunResumedEvent
    | RunStartedEvent
    | MessageDeltaEvent
    | ReasoningDeltaEvent
    | MessageCompletedEvent
    | ToolCallEvent
    | ToolResultEvent
    | HandoffEvent
    | SpeakerSelectedEvent
    | InputRequestedEvent
    | InputReceivedEvent
    | StepStartedEvent
    | StepCompletedEvent
    | BranchFailedEvent
    | RunCompletedEvent
    | RunFailedEvent
    | RunCancelledEvent,
    Field(discriminator="type"),
]


class TypedRunEvent(RootModel[AnyRunEvent]):
    """One run event: the same envelope on SSE (`data:`), WebSocket and in the stored log; `type` says which."""


class RunEvent(BaseModel):
    """A run event as the API serves it: the stored envelope, passed through as it is.

    Documented as ``TypedRunEvent`` (the union); not checked against it when served, so that a log
    written by a newer server (a type or field this one does not know) is still readable. The
    tests hold the run path to the union.
    """

    run_id: str
    seq: int
    type: str
    at: str
    data: dict[str, Any]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(TypedRunEvent.__pydantic_core_schema__)


class StreamLagged(BaseModel):
    """SSE `event: stream.lagged` (no `id`): this watcher fell behind and was re-attached after `last_seq`."""

    run_id: str
    last_seq: int = Field(description="The seq of the last event this watcher was sent.")


class StreamClosing(BaseModel):
    """SSE `event: stream.closing` (no `id`): the server is stopping, or cannot read the database;
    resume after `last_seq` (on another server, or once it is back)."""

    run_id: str
    last_seq: int = Field(description="Resume after this seq (`Last-Event-ID` or `?after=`).")
    reason: Literal["shutdown", "storage_unavailable"] = Field(
        description="`shutdown`: the server is stopping; `storage_unavailable`: the database did not answer "
        "within `SWARM_STORAGE_RETRY_S`."
    )


STREAM_NOTICES: tuple[type[BaseModel], ...] = (StreamLagged, StreamClosing)


class EventPage(BaseModel):
    """A page of a run's stored events (`GET /v1/runs/{id}/events` with `Accept: application/json`)."""

    data: list[RunEvent]
    last_seq: int = Field(description="Seq of the last event in this page (or the `after` given, if none).")
    has_more: bool = Field(description="Whether more stored events follow; pass `last_seq` as `after`.")
