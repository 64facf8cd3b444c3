"""A team's own output queue: where the fast token path puts the streamed chunks that must wait."""

from __future__ import annotations

import asyncio
from typing import Any

from autogen_agentchat.messages import BaseAgentEvent, ModelClientStreamingChunkEvent
from autogen_agentchat.teams import BaseGroupChat

from app.patches.autogen_output_queue import attach_output_queue


class QueuedReasoning(ModelClientStreamingChunkEvent):
    """A streamed piece of reasoning that waits its turn on the team's output queue (answer text
    waits as AutoGen's own ``ModelClientStreamingChunkEvent``, which ``run_stream`` leaves out of
    its ``TaskResult``; so is this)."""


class OutputQueue(asyncio.Queue[Any]):
    """AutoGen's output queue, counting what was put on it and not yet handled by the run's consumer."""

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def put_nowait(self, item: Any) -> None:  # put() comes here too
        super().put_nowait(item)
        self.pending += 1


class TeamOutbox:
    """A team's output queue, once the team exists (its agents' sinks are made before it).

    A streamed chunk may skip the queue (``idle``) when everything the team put on it before has
    been handled by the consumer loop: published at once, it still comes after all of that, and
    before whatever the team puts out later. Otherwise it queues behind the rest, in order.
    """

    def __init__(self, shown: frozenset[str], tags: dict[str, Any] | None = None) -> None:
        self.shown = shown  # the agents whose chunks are deltas (a selector's own tokens are not)
        self.tags = tags or {}  # added to every delta (a chain's step and branch)
        self._queue: OutputQueue | None = None

    def attach(self, team: BaseGroupChat) -> None:
        """Make the team's output queue ours, before it first starts (``app/patches/autogen_output_queue.py``)."""
        self._queue = OutputQueue()
        attach_output_queue(team, self._queue)

    @property
    def idle(self) -> bool:
        assert self._queue is not None, "a model call before its team exists"
        return self._queue.pending == 0

    def put(self, item: ModelClientStreamingChunkEvent) -> None:
        assert self._queue is not None, "a model call before its team exists"
        self._queue.put_nowait(item)

    def put_event(self, item: BaseAgentEvent) -> None:
        """An event of the run's own for its consumer loop, behind everything the team has put out so far
        (a tool's call asking for approval, ``app/runtime/run/humans.py``)."""
        assert self._queue is not None, "an event before its team exists"
        self._queue.put_nowait(item)

    def handled(self) -> None:
        """The consumer loop is done with one item it took from the queue."""
        assert self._queue is not None
        self._queue.pending -= 1

    def reset(self) -> None:
        """A team's run_stream has ended: it empties the queue, termination item included."""
        if self._queue is not None:
            self._queue.pending = self._queue.qsize()
