"""A resumed turn, given again from the run's log instead of being asked for twice.

A run that resumes after a crash (``retries``) goes on from its last checkpoint: the team's state after
its last whole turn. What the interrupted turn had already done is in the log: the model's replies that
called tools (``tool.call`` events) and the results of the tools that finished (``tool.result``). The
resumed team plays that turn again with ``ReplyPins``: the agent's model client gives back those
replies, in order, without a model call, and a tool call that finished gives back its stored result
(``ToolReplay``). A call that was still running when the process died is not run again unless its tool
is idempotent: the model gets an error result saying so. Past the pinned replies the turn goes on live:
the model call the crash interrupted is made again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage

INTERRUPTED = (
    "The server stopped while this tool was running, and the run resumed without running it again: "
    "whether it took effect is unknown."
)


class Interrupted(RuntimeError):
    """A tool call cut short by a crash, not run again: the model gets this as an error result."""


def pinned_reply(calls: Sequence[tuple[str, str, str]], thought: str | None = None) -> CreateResult:
    """A model reply that called tools, rebuilt from its ``tool.call`` events: (call id, name, arguments)."""
    return CreateResult(
        finish_reason="function_calls",
        content=[FunctionCall(id=call_id, name=name, arguments=arguments) for call_id, name, arguments in calls],
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),  # billed when the reply was first made
        cached=True,
        thought=thought,
    )


class ReplyPins:
    """Per agent, the replies its model client gives back instead of calling the model."""

    __slots__ = ("_replies",)

    def __init__(self, replies: Mapping[str, Sequence[CreateResult]]) -> None:
        self._replies = {agent: deque(items) for agent, items in replies.items() if items}

    def take(self, agent: str) -> CreateResult | None:
        """The agent's next pinned reply, or None: call the model."""
        queue = self._replies.get(agent)
        if not queue:
            return None
        return queue.popleft()

    def __bool__(self) -> bool:
        return any(self._replies.values())


@dataclass(slots=True)
class ToolReplay:
    """The interrupted turn's tool calls: those that finished (their stored result) and those cut short."""

    results: dict[str, tuple[str, bool]] = field(default_factory=dict)  # call id -> (content, is_error)
    cut: set[str] = field(default_factory=set)  # call ids with no result

    def outcome(self, call_id: str | None, idempotent: bool) -> tuple[str, bool] | None:
        """What a replayed call gives back: its stored result, or for a cut call of a tool that is not
        idempotent an ``Interrupted`` error; None: run the tool (a new call, or an idempotent one)."""
        if call_id is None:
            return None
        if (stored := self.results.get(call_id)) is not None:
            return stored
        if call_id in self.cut and not idempotent:
            self.cut.discard(call_id)  # said once; should the model call it again, that is a new call
            return INTERRUPTED, True
        return None
