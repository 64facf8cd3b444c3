"""The one vocabulary of a run's life: its statuses and its event types.

Everything else derives from here: the runtime writes these types, the event schemas document
each of them (``app/runs/event_schemas.py``; a test holds the two in step), the docs list them
(``docs/events.md``), and which statuses and events are terminal is decided once, below.

To add an event type: add it to ``EventType`` (and to ``STREAMED_TYPES`` if it is published before
it is stored, like a delta), give it a schema in ``app/runs/event_schemas.py``, document it in
``docs/events.md``, and emit it through the run's ``Journal``.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

RunStatus = Literal["queued", "running", "awaiting_input", "succeeded", "failed", "cancelled", "timed_out"]

EventType = Literal[
    "run.queued",
    "run.requeued",
    "run.resumed",
    "run.started",
    "message.delta",
    "reasoning.delta",
    "message.completed",
    "tool.call",
    "tool.result",
    "handoff",
    "speaker.selected",
    "input.requested",
    "input.received",
    "step.started",
    "step.completed",
    "branch.failed",
    "run.completed",
    "run.failed",
    "run.cancelled",
]

RUN_STATUSES: Final[tuple[RunStatus, ...]] = get_args(RunStatus)
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

# how each way a run ends is announced: its status, and the terminal event that says so
TERMINAL_EVENT: Final[dict[RunStatus, EventType]] = {
    "succeeded": "run.completed",
    "failed": "run.failed",
    "timed_out": "run.failed",
    "cancelled": "run.cancelled",
}
TERMINAL_STATUSES: Final[tuple[RunStatus, ...]] = tuple(s for s in RUN_STATUSES if s in TERMINAL_EVENT)
ACTIVE_STATUSES: Final[tuple[RunStatus, ...]] = tuple(s for s in RUN_STATUSES if s not in TERMINAL_EVENT)
TERMINAL_TYPES: Final[frozenset[EventType]] = frozenset(TERMINAL_EVENT.values())

DELTA: Final[EventType] = "message.delta"
REASONING_DELTA: Final[EventType] = "reasoning.delta"
# published at once, stored in batches (the recorder's delta rows), not committed one by one
STREAMED_TYPES: Final[frozenset[EventType]] = frozenset({DELTA, REASONING_DELTA})
