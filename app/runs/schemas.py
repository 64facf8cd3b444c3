"""Run requests and run resources as the API documents them; the events are in ``event_schemas``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator, model_validator

from app.core.schemas import StrictModel
from app.core.vocabulary import RunStatus as RunStatus
from app.runs.event_schemas import EventPage as EventPage
from app.runs.event_schemas import RunError as RunError
from app.runs.event_schemas import RunEvent
from app.runs.event_schemas import RunResult as RunResult
from app.runs.event_schemas import Usage as Usage
from app.teams.schemas import TeamSpec

# the event envelope keeps its old name here; its typed variants live in app.runs.event_schemas
EventEnvelope = RunEvent

MetadataValue = str | int | float | bool | None


def _unquoted(value: str) -> str:
    # draft-ietf-httpapi-idempotency-key-header sends the key as a quoted sf-string; Stripe-style
    # clients send it bare: both name the same key
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value:
        raise ValueError("the key is empty")
    return value


IDEMPOTENCY_KEY_MAX_CHARS = 255
# 1 to 255 printable ASCII characters, no space at either end (a UUID, a ULID, a hash ...)
IdempotencyKey = Annotated[
    str,
    StringConstraints(max_length=IDEMPOTENCY_KEY_MAX_CHARS, pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"),
    AfterValidator(_unquoted),
]


class RunCreate(StrictModel):
    team_id: str | None = Field(
        default=None, description="A stored team, by id or by name (e.g. `demo`).", examples=["demo"]
    )
    team: TeamSpec | None = Field(default=None, description="An inline team spec, instead of `team_id`.")
    task: str = Field(min_length=1, description="What the team should do.", examples=["Write a haiku about rivers."])
    conversation_id: str | None = Field(
        default=None, description="Continue this conversation with its full context; absent: start a new one."
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Hard time limit; the run ends `timed_out`. Default: the server's."
    )
    input_timeout_s: float | None = Field(
        default=None, gt=0, description="How long to wait for a person's input; default: the server's."
    )
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, max_length=32, description="Your own labels, returned as given."
    )
    if_busy: Literal["reject", "enqueue", "interrupt"] = Field(
        default="reject",
        description=(
            "When the conversation has a run going: `reject` (409), `enqueue` (start after it), "
            "or `interrupt` (cancel it, then start)."
        ),
    )

    retries: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description=(
            "How many times the run resumes when the process executing it dies (an embedded server restarted, "
            "a distributed worker lost): from its last whole turn, the interrupted turn's model call made "
            "again (see the human-in-the-loop guide, *Resume after a crash*). 0: the run ends `failed` with "
            "`server_restarted` or `worker_lost`. Absent: the server's `SWARM_RUN_RETRIES` (0 unless set)."
        ),
    )

    @field_validator("task")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the task is blank")
        return value

    @model_validator(mode="after")
    def _one_team(self) -> RunCreate:
        if (self.team_id is None) == (self.team is None):
            raise ValueError("give exactly one of `team_id` or `team`")
        return self


class InputCreate(StrictModel):
    request_id: str = Field(
        min_length=1, max_length=100, description="The `request_id` of the `input.requested` event."
    )
    content: str | None = Field(
        default=None,
        description=(
            "The person's answer to a request of kind `input` (required there). With a `decision`, a note: on "
            "`reject`, the reason the model is told."
        ),
        examples=["Yes, go ahead."],
    )
    decision: Literal["approve", "reject", "edit"] | None = Field(
        default=None,
        description=(
            "The answer to a request of kind `approval` (required there, refused elsewhere): run the tool's "
            "call as asked, decline it (the model gets an error result saying a person declined it), or run it "
            "with `arguments` instead."
        ),
    )
    arguments: dict[str, Any] | None = Field(
        default=None,
        description="With `edit` (and only then): the arguments the call runs with, checked against the tool's.",
    )


class RunRead(BaseModel):
    id: str = Field(examples=["run_01JDAX3G4F6Q3C9W8R4T0M2N7B"])
    object: Literal["run"] = "run"
    status: RunStatus
    conversation_id: str
    team_id: str | None = None
    team_name: str
    task: str
    if_busy: str
    timeout_s: float
    input_timeout_s: float
    metadata: dict[str, MetadataValue]
    stop_reason: str | None = Field(default=None, description="Why the team stopped, or why it was cancelled.")
    error: RunError | None = None
    usage: Usage
    message_count: int = Field(description="Messages this run added to its conversation, the task included.")
    last_seq: int = Field(description="The seq of the run's last event once it has finished; 0 before.")
    result: RunResult | None = None
    attempts: int = Field(default=0, description="How many times a worker started the run (0 while queued).")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
