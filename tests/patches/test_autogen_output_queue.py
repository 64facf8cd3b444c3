"""A team's output queue replaced by ours (app/patches/autogen_output_queue.py): the team's run goes
through it, as through AutoGen's own, and a team that has started is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.replay import ReplayChatCompletionClient

from app.patches.autogen_output_queue import attach_output_queue


class RecordingQueue(asyncio.Queue[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def put_nowait(self, item: Any) -> None:  # put() comes here too
        super().put_nowait(item)
        self.seen.append(item)

    def messages(self) -> list[tuple[str, str]]:
        return [(m.source, m.to_text()) for m in self.seen if isinstance(m, BaseChatMessage | BaseAgentEvent)]


def team() -> RoundRobinGroupChat:
    agents = [
        AssistantAgent(name, model_client=ReplayChatCompletionClient([f"{name} says {n}" for n in range(3)]))
        for name in ("ann", "bob")
    ]
    return RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(4))


async def streamed(group: RoundRobinGroupChat) -> list[tuple[str, str]]:
    out = []
    async for item in group.run_stream(task="go"):
        if isinstance(item, BaseChatMessage | BaseAgentEvent):
            out.append((item.source, item.to_text()))
    return out


async def test_the_run_goes_through_our_queue_as_through_autogens() -> None:
    ours, queue = team(), RecordingQueue()
    attach_output_queue(ours, queue)
    first = await streamed(ours)
    assert first == await streamed(team())
    # every message came through it, then the termination; run_stream emptied it
    assert queue.messages() == first and type(queue.seen[-1]).__name__ == "GroupChatTermination"
    assert queue.empty()
    second = await streamed(ours)  # the next run of the same team uses it too
    assert queue.messages() == first + second


async def test_a_team_that_has_started_keeps_its_queue() -> None:
    group = team()
    await streamed(group)
    with pytest.raises(RuntimeError, match="has started"):
        attach_output_queue(group, RecordingQueue())
