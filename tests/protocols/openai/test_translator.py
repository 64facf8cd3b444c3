"""The translator on recorded runs: the envelopes a run stored, read back, become OpenAI's chunks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from app.core.envelope import Envelope, parse_at
from app.core.vocabulary import EventType
from app.protocols.openai.translator import DONE, ChatTranslator, joined, translate_run
from tests.fixtures.specs import agent, team


async def record(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], list[Envelope]]:
    """Run to the end on the fake model; the run and its stored envelopes."""
    done = await client.post("/v1/runs/wait", json=body)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    run: dict[str, Any] = done.json()
    page = (await client.get(f"/v1/runs/{run['id']}/events/page", params={"limit": 1000})).json()
    assert not page["has_more"]
    events = [Envelope(e["run_id"], e["seq"], e["type"], parse_at(e["at"]), e["data"]) for e in page["data"]]
    return run, events


def turns(events: list[Envelope]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == "message.completed" and e.data["agent"] != "user"]


async def test_a_recorded_run_becomes_its_answer_and_its_turns_as_reasoning(client: httpx.AsyncClient) -> None:
    run, events = await record(client, {"team_id": "demo", "task": "Write a haiku about rivers."})
    chunks = translate_run(events, "chatcmpl-x", "demo", 1, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["id"] for c in chunks} == {"chatcmpl-x"} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    content, reasoning = joined(chunks)
    assert content == run["result"]["text"]
    assert reasoning == "\n\n".join(f"**{t['agent']}**: {t['text']}" for t in turns(events))
    deltas = [e for e in events if e.type == "message.delta"]
    assert deltas, "the fake model streams: each delta is a chunk of its own"
    assert len([c for c in chunks if c["choices"] and "reasoning_content" in c["choices"][0]["delta"]]) == len(deltas)
    assert chunks[-1] == {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "demo",
        "choices": [],
        "usage": {k: run["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
    }
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}


async def test_a_log_without_its_deltas_reads_the_same(client: httpx.AsyncClient) -> None:
    """Deltas are purged after their retention (and absent on AutoGen's own streaming path): the
    completed messages alone give the same reasoning and the same answer."""
    _run, events = await record(client, {"team_id": "demo", "task": "hello"})
    whole = joined(translate_run(events, "c", "demo", 1))
    without = joined(translate_run([e for e in events if e.type != "message.delta"], "c", "demo", 1))
    assert without == whole and whole[1]


async def test_tool_calls_and_handoffs_are_notes_in_the_reasoning(client: httpx.AsyncClient) -> None:
    planner_script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"handoff": "solver"},
    ]
    members = [
        agent("planner", tools=["calculator"], handoffs=["solver"], model_options={"script": planner_script}),
        agent("solver", handoffs=["planner"], model_options={"script": [{"text": "It is 42. TERMINATE"}]}),
    ]
    spec = team("swarmy", kind="swarm", members=members, max_messages=8, termination={"text_mention": "TERMINATE"})
    run, events = await record(client, {"team": spec, "task": "6 x 7?"})
    content, reasoning = joined(translate_run(events, "c", "swarmy", 1))
    assert content == run["result"]["text"] == "It is 42. TERMINATE"
    call = reasoning.index('**planner** calls `calculator({"expression": "6*7"})`')
    result = reasoning.index("`calculator` returned: 42")
    handoff = reasoning.index("**planner** hands off to **solver**")
    assert call < result < handoff < reasoning.index("**solver**: It is 42. TERMINATE")


async def test_frames_are_openais_sse_and_end_with_done(client: httpx.AsyncClient) -> None:
    run, events = await record(client, {"team_id": "demo", "task": "hello"})
    translator = ChatTranslator("c", "demo", 1, include_reasoning=False)
    half = len(events) // 2
    raw = translator.frames(events[:half]) + translator.frames(events[half:])
    assert raw.endswith(DONE) and raw.count(DONE) == 1
    frames = [orjson.loads(f.removeprefix(b"data: ")) for f in raw.split(b"\n\n") if f and f != DONE.strip()]
    # without reasoning: the role, the answer, the end
    assert [f["choices"][0]["delta"] for f in frames] == [
        {"role": "assistant", "content": ""},
        {"content": run["result"]["text"]},
        {},
    ]


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        ({"status": "failed", "error": {"code": "model_error", "message": "boom"}}, "model_error"),
        ({"status": "cancelled", "reason": "cancelled"}, "run_cancelled"),
    ],
)
def test_a_run_that_ends_without_a_result_ends_with_an_error_frame(ending: dict[str, Any], code: str) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    kind: EventType = "run.failed" if ending["status"] == "failed" else "run.cancelled"
    events = [
        Envelope("run_1", 1, "run.queued", at, {"conversation_id": "conv_1", "team": "demo", "task": "t"}),
        Envelope("run_1", 2, "message.delta", at, {"message_id": "m1", "agent": "writer", "text": "half"}),
        Envelope("run_1", 3, kind, at, {**ending, "usage": usage, "duration_ms": 1}),
    ]
    translator = ChatTranslator("c", "demo", 1)
    raw = translator.frames(events)
    frames = raw.removesuffix(DONE).split(b"\n\n")
    error = orjson.loads(frames[-2].removeprefix(b"data: "))
    assert error["error"]["code"] == code and error["error"]["type"] == "server_error"
    assert raw.endswith(DONE) and b'"content":"half"' not in raw  # a part-written turn is never the answer
    assert translator.usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
