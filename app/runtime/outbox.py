"""A team's own output queue: where the fast token path puts streamed chunks."""

from __future__ import annotations

import asyncio
from typing import Any

from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import BaseGroupChat


class TeamOutbox:
    """A team's own output queue, once the team exists (its agents' sinks are made before it)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] | None = None

    def attach(self, team: BaseGroupChat) -> None:
        # AutoGen's run_stream yields whatever lands on this queue, in order (pinned AutoGen version)
        self._queue = team._output_message_queue

    def put(self, item: ModelClientStreamingChunkEvent) -> None:
        assert self._queue is not None, "a model call before its team exists"
        self._queue.put_nowait(item)
