"""Step mode (issue 24): a run with ``retries`` stops its team after every turn to keep a checkpoint.

It must not change what the run does: the same team, with and without retries, puts out the same
messages and the same events (no stop shows), for every kind that keeps checkpoints. The checkpoint
is there while the run goes and is gone with its end.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.runs.models import RunCheckpoint
from tests.conftest import services_of
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent, team

SHAPES: dict[str, dict[str, Any]] = {
    "round_robin": team(members=[agent("writer", "fake/t6"), agent("critic", "fake/t4")], max_messages=6),
    "selector": team(
        "choosing",
        kind="selector",
        selector_model="fake/t1",
        members=[agent("writer", "fake/t6"), agent("critic", "fake/t4"), agent("editor", "fake/t3")],
        max_messages=5,
    ),
    "swarm": team(
        "desk",
        kind="swarm",
        members=[
            agent(
                "planner",
                tools=["calculator"],
                handoffs=["solver"],
                model_options={
                    "script": [
                        {"text": "Let me count."},
                        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                        {"handoff": "solver"},
                    ]
                },
            ),
            agent("solver", "fake/t5", handoffs=["planner"]),
        ],
        max_messages=6,
    ),
}


def shape_of(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What a run did, without its ids and times: each event's type and its content that matters."""
    out: list[tuple[str, Any]] = []
    for e in events:
        data = e["data"]
        if e["type"] == "message.completed":
            out.append((e["type"], (data["agent"], data["type"], data["text"], data["position"] > 0)))
        elif e["type"] in ("tool.call", "tool.result"):
            out.append((e["type"], (data["agent"], data["name"], data.get("content"))))
        elif e["type"] == "run.completed":
            result = {k: v for k, v in data["result"].items() if k != "message_id"}
            out.append((e["type"], (data["usage"], data["stop_reason"], result)))
        elif e["type"] in ("handoff", "speaker.selected"):
            out.append((e["type"], {k: v for k, v in data.items() if k != "message_id"}))
        else:
            out.append((e["type"], None))
    return out


@pytest.mark.parametrize("kind", sorted(SHAPES))
async def test_a_run_with_retries_does_what_the_same_run_without_does(client: httpx.AsyncClient, kind: str) -> None:
    spec = SHAPES[kind]
    plain = await wait_run(client, team=spec, retries=0, expect="succeeded")
    stepped = await wait_run(client, team=spec, retries=2, expect="succeeded")
    assert stepped["stop_reason"] == plain["stop_reason"]
    assert stepped["message_count"] == plain["message_count"] and plain["message_count"] >= 4
    assert shape_of(await stored_events(client, stepped["id"])) == shape_of(await stored_events(client, plain["id"]))


async def test_the_checkpoint_is_written_each_turn_and_gone_with_the_run(client: httpx.AsyncClient, app: Any) -> None:
    services = services_of(app)
    seen: list[int] = []
    original = services.recorder.commit

    async def watch(env: Any, apply: Any = None, *, then: Any = None) -> None:
        await original(env, apply, then=then)
        if env is None:
            return
        async with services.sessionmaker() as session:
            row = await session.scalar(select(RunCheckpoint).where(RunCheckpoint.run_id == env.run_id))
            if row is not None and (not seen or seen[-1] != row.seq):
                seen.append(row.seq)

    services.recorder.commit = watch  # type: ignore[method-assign]
    run = await wait_run(client, team=SHAPES["round_robin"], retries=1, expect="succeeded")
    events = await stored_events(client, run["id"])
    replies = [e["seq"] for e in events if e["type"] == "message.completed" and e["data"]["agent"] != "user"]
    # one checkpoint per whole turn, at its message, each replacing the one before; the last turn's
    # (the run's end) is not kept
    assert seen == replies[:-1], (seen, replies)
    async with services.sessionmaker() as session:
        assert await session.scalar(select(RunCheckpoint).where(RunCheckpoint.run_id == run["id"])) is None
