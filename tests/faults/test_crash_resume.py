"""Runs that resume after a crash (issue 24), in the embedded mode: a real server ``kill -9``ed mid-turn.

A run with ``retries`` keeps a checkpoint, its team's state after each whole turn, written with that
turn's message. When its process dies, the next start writes ``run.requeued`` (``server_restarted``),
naming the message it had begun to stream, and resumes it: ``run.resumed``, then the interrupted turn
made again. The stored messages hold every turn once; the abandoned deltas stay in the log, named by
the requeue; a tool call the crash cut is not run again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.runs.event_schemas import TypedRunEvent
from tests.e2e.test_streaming import TERMINAL
from tests.faults.test_parked_runs import ENDED, Watcher, messages_of, servers
from tests.fixtures.runs import stored_events, wait_for_status
from tests.fixtures.specs import agent, run_body, team

pytestmark = pytest.mark.e2e


def slow_pair(max_messages: int = 5) -> dict[str, Any]:
    """Two agents taking turns, each message 24 words at 40 ms apiece (about a second)."""
    return team(members=[agent("writer", "fake/t24-d40"), agent("critic", "fake/t24-d40")], max_messages=max_messages)


def completed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "message.completed"]


async def until(predicate: Any, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def interrupted_deltas(events: list[dict[str, Any]]) -> set[str]:
    """Messages that have deltas and no ``message.completed`` in ``events``."""
    done = {e["data"]["message_id"] for e in completed(events)}
    return {e["data"]["message_id"] for e in events if e["type"] == "message.delta"} - done


async def test_a_run_killed_mid_message_resumes_from_its_last_turn_after_the_restart(tmp_path: Path) -> None:
    async with servers(tmp_path) as running:
        client = await running.start()
        watcher = Watcher()
        body = run_body(team=slow_pair(), retries=1)
        first = asyncio.create_task(watcher.start(client, body))

        def mid_third_message() -> bool:
            # the task and two replies stored, and a third reply half streamed
            return (
                len(completed(watcher.events)) == 3
                and len(interrupted_deltas(watcher.events)) == 1
                and sum(e["type"] == "message.delta" for e in watcher.events[-6:]) == 6
            )

        await until(mid_third_message)
        cut = interrupted_deltas(watcher.events)
        run_id = watcher.run_id
        running.kill()
        await first
        await client.aclose()

        client = await running.start()
        try:
            await watcher.resume(client)  # after the last seq it got, to the end
            done = await wait_for_status(client, run_id, ENDED)
            events = await stored_events(client, run_id)
            messages = await messages_of(client, done)
        finally:
            await client.aclose()

    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2, done
    for raw in events:  # as documented: the OpenAPI event union describes them exactly
        assert TypedRunEvent.model_validate(raw).root.model_dump(mode="json") == raw
    types = [e["type"] for e in events]
    assert types.count("run.started") == 1 and types.count("run.requeued") == 1 and types.count("run.resumed") == 1
    requeued = events[types.index("run.requeued")]
    resumed = events[types.index("run.resumed")]
    assert requeued["data"]["reason"] == "server_restarted"
    # the message cut mid-stream is named abandoned; its stored deltas stay, and it never completes
    abandoned = set(requeued["data"]["abandoned_message_ids"])
    assert cut <= abandoned, (cut, abandoned)
    assert abandoned.isdisjoint(e["data"]["message_id"] for e in completed(events))
    assert all(
        e["seq"] < requeued["seq"] for e in events if e["type"] == "message.delta" and e["data"]["message_id"] in cut
    )
    # it resumed after the last whole turn: the second reply
    before = completed([e for e in events if e["seq"] < requeued["seq"]])
    assert len(before) == 3 and resumed["data"]["checkpoint_seq"] == before[-1]["seq"]
    # every turn once: the task and four replies, taking turns, at dense positions
    assert [m["agent"] for m in messages] == ["user", "writer", "critic", "writer", "critic"]
    assert [m["position"] for m in messages] == [1, 2, 3, 4, 5]
    assert len({m["text"] for m in messages}) == 5
    # the watcher, across the kill and the restart, saw one run: in order, one terminal event, last
    seqs = [e["seq"] for e in watcher.events]
    assert seqs == sorted(set(seqs))
    assert [e["type"] for e in watcher.events if e["type"] in TERMINAL] == ["run.completed"]
    assert watcher.events[-1]["type"] == "run.completed"
    assert {e["seq"] for e in events} >= {
        e["seq"] for e in watcher.events if e["seq"] <= requeued["data"]["lost_after_seq"]
    }


async def test_a_tool_call_cut_by_kill_9_is_not_run_again_and_the_model_is_told(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    script = [
        {"text": "Let me write that down."},
        {"tool_calls": [{"name": "slow_note", "arguments": {"note": "buy milk"}}]},
    ]
    members = [agent("clerk", tools=["slow_note"], model_options={"script": script}), agent("critic", "fake/t4")]
    body = run_body(team=team(members=members, max_messages=4), retries=1)
    env = {"SWARM_TOOLS": '["tests.fixtures.tools:slow_note"]', "SWARM_TEST_NOTES": str(notes)}
    async with servers(tmp_path, **env) as running:
        client = await running.start()
        watcher = Watcher()
        first = asyncio.create_task(watcher.start(client, body))
        await until(lambda: notes.exists() and notes.read_text() == "buy milk\n")
        await until(lambda: any(e["type"] == "tool.call" for e in watcher.events))
        run_id = watcher.run_id
        running.kill()  # the tool is running (it takes a minute)
        await first
        await client.aclose()

        client = await running.start()
        try:
            done = await wait_for_status(client, run_id, ENDED)
            events = await stored_events(client, run_id)
            messages = await messages_of(client, done)
        finally:
            await client.aclose()

    assert done["status"] == "succeeded", done
    assert notes.read_text() == "buy milk\n", "the cut call was not run again"
    calls = [e for e in events if e["type"] == "tool.call"]
    results = [e for e in events if e["type"] == "tool.result"]
    assert len(calls) == 1 and len(results) == 1, (calls, results)
    (call,), (result,) = calls, results
    assert result["data"]["call_id"] == call["data"]["call_id"] and result["data"]["is_error"] is True
    assert (
        "not running it again" in result["data"]["content"] or "without running it again" in result["data"]["content"]
    )
    resumed = next(e for e in events if e["type"] == "run.resumed")
    assert call["seq"] < resumed["seq"] < result["seq"]
    # each turn once: the task, the clerk, the critic, then the clerk's turn that the crash cut, finished
    # with what the model was told (AutoGen sums a tool call's results up as the agent's message)
    assert [m["agent"] for m in messages] == ["user", "clerk", "critic", "clerk"]
    assert messages[-1]["text"] == result["data"]["content"]
