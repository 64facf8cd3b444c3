"""The fast token path: a streamed chunk becomes a delta at once unless something the team put out
before it is still on its way through the run's consumer loop; then it queues behind that, in order.

(Forcing every chunk straight out breaks the ordering tests of ``tests/e2e/test_streaming.py`` and
``tests/runtime/test_streams.py``: an agent's first deltas then overtake the message before them.)
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import RoundRobinGroupChat

from app.engine.fake import FakeChatCompletionClient, parse_fake_variant
from app.runtime.outbox import TeamOutbox
from tests.fixtures.runs import stored_events
from tests.fixtures.specs import agent, run_body, team


async def test_the_outbox_counts_what_the_team_put_out_until_the_loop_has_handled_it() -> None:
    members = [AssistantAgent(n, model_client=FakeChatCompletionClient(parse_fake_variant("t4"))) for n in "ab"]
    group = RoundRobinGroupChat(members, termination_condition=MaxMessageTermination(3))
    outbox = TeamOutbox(frozenset("ab"))
    outbox.attach(group)
    assert outbox.idle
    outbox.put(ModelClientStreamingChunkEvent(content="x", source="a", full_message_id="m"))
    assert not outbox.idle
    outbox.handled()
    assert outbox.idle
    group._output_message_queue.get_nowait()  # (the chunk put by hand, before the team runs)

    handled = 0
    async for item in group.run_stream(task="go"):
        if isinstance(item, TaskResult):
            continue
        assert not outbox.idle, "an item the loop holds keeps the outbox busy"
        outbox.handled()
        handled += 1
    assert handled == 3  # the task and two replies came through our queue
    assert not outbox.idle  # AutoGen's own end-of-run item, consumed by run_stream itself
    outbox.reset()
    assert outbox.idle


async def test_most_chunks_skip_the_queue_and_every_delta_keeps_its_place(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[Any] = []
    put = TeamOutbox.put
    monkeypatch.setattr(TeamOutbox, "put", lambda self, item: (queued.append(item), put(self, item))[1])
    spec = team(members=[agent("writer", "fake/t40-d5"), agent("critic", "fake/t40-d5")], max_messages=3)
    run = (await client.post("/v1/runs/wait", json=run_body(team=spec))).json()
    assert run["status"] == "succeeded", run
    events = await stored_events(client, run["id"])
    deltas = [e for e in events if e["type"] == "message.delta"]
    assert len(deltas) > 80  # 40 words per reply, after the fake model's "Fake reply ..." preamble
    assert len(queued) < len(deltas) // 2, f"{len(queued)} of {len(deltas)} chunks went through the team's queue"
    # each message's deltas come after the message before it and rebuild it before it completes
    completed = [e for e in events if e["type"] == "message.completed"]
    assert [m["data"]["agent"] for m in completed] == ["user", "writer", "critic"]
    for before, message in itertools.pairwise(completed):
        own = [d for d in deltas if d["data"]["message_id"] == message["data"]["message_id"]]
        assert len(own) > 40 and before["seq"] < own[0]["seq"] and own[-1]["seq"] < message["seq"]
        assert "".join(d["data"]["text"] for d in own) == message["data"]["text"]
