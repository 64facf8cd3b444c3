"""A run's interrupted turn, read back from its log to be played again (``app/engine/pins.py``): the
turn a crash cut, or the one a tool's approval parked.

The turn is what the log holds after the run's checkpoint (or after its start, when no turn had
ended): a selector team's pick of its speaker (``speaker.selected``), the model's replies that called
tools (consecutive ``tool.call`` events of one agent, with the thought stored just before them), the
tools' results (``tool.result``) and the calls that have none: cut by the crash, or waiting for an
approval (``input.requested`` without ``input.received``: those never ran, and ask again).
``TurnReplay`` gives the resumed team those picks, replies and results, and tells the consumer which
events are logged already (``LoggedCalls``), so the log holds each of them once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autogen_core.models import CreateResult, RequestUsage

from app.engine.approvals import ToolDeclined
from app.engine.events import Translated
from app.engine.pins import ReplyPins, ToolReplay, pinned_reply

REPLAY_TYPES = (
    "message.completed",
    "tool.call",
    "tool.result",
    "speaker.selected",
    "input.requested",
    "input.received",
)
SELECTOR = "selector"  # the model client a selector team picks its speakers with (``TeamFactory``)


@dataclass(slots=True)
class LoggedCalls:
    """Tool calls and results of a resumed turn that the log holds already."""

    calls: set[str] = field(default_factory=set)
    results: set[str] = field(default_factory=set)
    selections: int = 0  # a selector's picks of the turn, logged already: the first ones made again

    def unlogged(self, events: Translated) -> Translated:
        """``events`` without the tool calls, results and speaker picks already logged."""
        out: Translated = []
        for type_, data in events:
            call_id = data.get("call_id")
            if (type_ == "tool.call" and call_id in self.calls) or (type_ == "tool.result" and call_id in self.results):
                continue
            if type_ == "speaker.selected" and self.selections:
                self.selections -= 1
                continue
            out.append((type_, data))
        return out


@dataclass(slots=True)
class TurnReplay:
    pins: ReplyPins
    tools: ToolReplay
    logged: LoggedCalls

    @property
    def replies(self) -> int:
        return len(self.logged.calls)


def turn_replay(events: Sequence[tuple[int, str, dict[str, Any]]]) -> TurnReplay:
    """The interrupted turn from its events (``REPLAY_TYPES``, in seq order, after the checkpoint)."""
    replies: dict[str, list[CreateResult]] = {}
    results: dict[str, tuple[str, bool]] = {}
    group: list[tuple[str, str, str]] = []
    agent: str | None = None
    thought: str | None = None

    def close() -> None:
        nonlocal group, thought
        if group and agent is not None:
            replies.setdefault(agent, []).append(pinned_reply(group, thought))
        group, thought = [], None

    picks: list[CreateResult] = []
    asked: dict[str, str] = {}  # approval requests not answered: request id -> the call waiting
    declined: dict[str, str | None] = {}  # calls a person declined: call id -> their reason
    for _seq, type_, data in events:
        if type_ == "input.requested" and data.get("kind") == "approval":
            asked[data["request_id"]] = data["tool"]["call_id"]
        elif type_ == "input.received" and (call_id := asked.pop(data["request_id"], None)) is not None:
            if data.get("decision") == "reject":
                declined[call_id] = data.get("reason")  # it never ran: the model gets the refusal again
        elif type_ == "speaker.selected":
            # a selector's pick: made again the same (a model could pick another, whose turn this is not)
            picks.append(picked(data["agents"][0]))
        elif type_ == "tool.call":
            if group and data["agent"] != agent:
                close()
            agent = data["agent"]
            group.append((data["call_id"], data["name"], data["arguments"]))
        elif type_ == "tool.result":
            close()
            results[data["call_id"]] = (data["content"], bool(data["is_error"]))
        elif type_ == "message.completed" and data.get("type") == "ThoughtEvent":
            close()
            thought = data["text"]
    close()
    calls = {c.id for items in replies.values() for reply in items for c in _calls(reply)}
    logged = LoggedCalls(calls, set(results), len(picks))
    names = {c.id: c.name for items in replies.values() for reply in items for c in _calls(reply)}
    for call_id, reason in declined.items():
        if call_id not in results:
            results[call_id] = (str(ToolDeclined(names.get(call_id, ""), reason)), True)
    # a call still waiting for its approval never ran: it asks again, it is not cut
    cut = calls - set(results) - set(asked.values())
    if picks:
        replies[SELECTOR] = picks
    return TurnReplay(ReplyPins(replies), ToolReplay(results, cut), logged)


def picked(agent: str) -> CreateResult:
    """A selector's reply that picked ``agent``, given again."""
    return CreateResult(
        finish_reason="stop", content=agent, usage=RequestUsage(prompt_tokens=0, completion_tokens=0), cached=True
    )


def _calls(reply: CreateResult) -> list[Any]:
    return list(reply.content) if isinstance(reply.content, list) else []
