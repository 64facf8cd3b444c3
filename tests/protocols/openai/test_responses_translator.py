"""The Responses translator on recorded runs: every event the SDK knows, numbered from the log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from app.core.envelope import Envelope
from app.core.vocabulary import EventType
from app.protocols.openai.responses_translator import STRIDE, ResponsesTranslator, translate_run
from tests.fixtures.specs import agent, team
from tests.protocols.openai.test_translator import record

EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def fresh(*, include_reasoning: bool = True) -> ResponsesTranslator:
    return ResponsesTranslator("resp_x", "demo", 1, include_reasoning=include_reasoning)


def texts(response: dict[str, Any]) -> list[str]:
    return [
        item["content"][0]["text"]
        for item in response["output"]
        if item["type"] == "reasoning" or item["type"] == "message"
    ]


async def test_a_recorded_run_becomes_events_the_sdk_validates(client: httpx.AsyncClient) -> None:
    run, events = await record(client, {"team_id": "demo", "task": "Write a haiku about rivers."})
    translator = fresh()
    out = translate_run(events, translator)
    for event in out:
        EVENTS.validate_python(event)  # strict: every field the SDK's model requires, of its type
    response = Response.model_validate(translator.response())
    assert response.output_text == run["result"]["text"] and response.status == "completed"
    assert out[-1]["type"] == "response.completed" and out[-1]["response"] == translator.response()
    # numbered from the log: s * STRIDE + i, strictly increasing
    by_seq = {e.seq for e in events}
    numbers = [e["sequence_number"] for e in out]
    assert numbers == sorted(set(numbers)) and {n // STRIDE for n in numbers} <= by_seq


async def test_any_resume_point_gives_exactly_the_later_events(client: httpx.AsyncClient) -> None:
    _run, events = await record(client, {"team_id": "demo", "task": "hello"})
    whole = translate_run(events, fresh())
    again = translate_run(events, fresh())
    assert again == whole  # the same log, the same events, numbered alike
    for cut in whole:
        n = cut["sequence_number"]
        later = [e for e in translate_run(events, fresh()) if e["sequence_number"] > n]
        assert later == whole[whole.index(cut) + 1 :]


async def test_a_log_without_its_deltas_builds_the_same_response(client: httpx.AsyncClient) -> None:
    """Deltas are purged after their retention: the completed messages alone give the same output."""
    _run, events = await record(client, {"team_id": "demo", "task": "hello"})
    whole, without = fresh(), fresh()
    translate_run(events, whole)
    translate_run([e for e in events if e.type != "message.delta"], without)
    assert texts(without.response()) == texts(whole.response()) and len(texts(whole.response())) >= 3


async def test_tool_calls_and_handoffs_are_reasoning_items(client: httpx.AsyncClient) -> None:
    planner_script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"handoff": "solver"},
    ]
    members = [
        agent("planner", tools=["calculator"], handoffs=["solver"], model_options={"script": planner_script}),
        agent("solver", handoffs=["planner"], model_options={"script": [{"text": "It is 42. TERMINATE"}]}),
    ]
    spec = team("swarmy", kind="swarm", members=members, max_messages=8, termination={"text_mention": "TERMINATE"})
    _run, events = await record(client, {"team": spec, "task": "6 x 7?"})
    translator = fresh()
    translate_run(events, translator)
    said = texts(translator.response())
    call = said.index('**planner** calls `calculator({"expression": "6*7"})`')
    assert call < said.index("`calculator` returned: 42") < said.index("**planner** hands off to **solver**")
    assert said[-1] == "It is 42. TERMINATE"
    left_out = fresh(include_reasoning=False)
    translate_run(events, left_out)
    assert texts(left_out.response()) == ["It is 42. TERMINATE"]


@pytest.mark.parametrize(
    ("ending", "status", "error"),
    [
        (
            {"status": "failed", "error": {"code": "model_error", "message": "boom"}},
            "failed",
            {"code": "server_error", "message": "The run failed (model_error): boom"},
        ),
        ({"status": "cancelled", "reason": "cancelled"}, "cancelled", None),
    ],
)
def test_a_run_without_a_result_fails_its_response(
    ending: dict[str, Any], status: str, error: dict[str, str] | None
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    kind: EventType = "run.failed" if ending["status"] == "failed" else "run.cancelled"
    events = [
        Envelope("run_1", 1, "run.queued", at, {"conversation_id": "conv_1", "team": "demo", "task": "t"}),
        Envelope("run_1", 2, "message.delta", at, {"message_id": "m1", "agent": "writer", "text": "half"}),
        Envelope("run_1", 3, kind, at, {**ending, "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
    ]
    translator = fresh()
    out = translate_run(events, translator)
    for event in out:
        EVENTS.validate_python(event)
    assert [e["type"] for e in out][-4:] == [
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    failed = out[-1]["response"]
    assert (failed["status"], failed["error"]) == (status, error)
    assert failed["usage"]["total_tokens"] == 7
    assert [item["status"] for item in failed["output"]] == ["incomplete"]  # a part-written turn is never the answer
    assert not [e for e in out if e["type"] == "response.output_text.delta"]


def _asking_log() -> list[Envelope]:
    """A run that asks a person once, is answered, and completes (as a round robin with a user proxy logs it)."""
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def usage(p: int, c: int) -> dict[str, int]:
        return {"prompt_tokens": p, "completion_tokens": c}

    def message(seq: int, message_id: str, agent: str, text: str, spent: dict[str, int]) -> Envelope:
        data = {"message_id": message_id, "agent": agent, "type": "TextMessage", "text": text, "usage": spent}
        return Envelope("run_1", seq, "message.completed", at, {**data, "position": seq})

    request = {"request_id": "req_1", "agent": "human", "prompt": "Where to?"}
    return [
        Envelope("run_1", 1, "run.queued", at, {}),
        Envelope("run_1", 2, "run.started", at, {}),
        message(3, "m1", "user", "Plan a trip.", usage(0, 0)),
        Envelope("run_1", 4, "message.delta", at, {"message_id": "m2", "agent": "helper", "text": "Where"}),
        message(5, "m2", "helper", "Where", usage(10, 2)),
        Envelope("run_1", 6, "input.requested", at, request),
        Envelope("run_1", 7, "input.received", at, {**request, "content": "Paris"}),
        message(8, "m3", "human", "Paris", usage(0, 0)),
        Envelope("run_1", 9, "message.delta", at, {"message_id": "m4", "agent": "helper", "text": "Done"}),
        message(10, "m4", "helper", "Done", usage(20, 3)),
        Envelope("run_1", 11, "run.completed", at, {"result": {"text": "Done"}, "usage": usage(31, 6)}),
    ]


def test_an_input_request_ends_the_response_with_a_human_input_call() -> None:
    log = _asking_log()
    translator = fresh()
    out = translate_run(log, translator)
    for event in out:
        EVENTS.validate_python(event)
    response = Response.model_validate(translator.response())
    assert out[-1]["type"] == "response.completed" and out[-1]["sequence_number"] // STRIDE == 6
    assert response.status == "completed" and translator.waiting_on == "call_req_1" and translator.waiting_seq == 6
    call = response.output[-1]
    assert call.type == "function_call" and call.name == "human_input" and call.call_id == "call_req_1"
    assert call.arguments == '{"agent":"human","prompt":"Where to?"}'
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (10, 2)
    # what the log holds after the request is the next response's, not this one's
    assert translate_run(log[6:], translator) == []


def test_the_answering_response_is_the_log_from_the_request_on() -> None:
    log = _asking_log()
    first = translate_run(log, fresh())
    translator = ResponsesTranslator("resp_x-6", "demo", 1, resumes_at=6)
    out = translate_run(log, translator)
    for event in out:
        EVENTS.validate_python(event)
    response = Response.model_validate(translator.response())
    assert [e["type"] for e in out[:2]] == ["response.created", "response.in_progress"]
    assert min(e["sequence_number"] for e in out) == 6 * STRIDE  # numbered from the request's seq
    assert response.previous_response_id == "resp_x" and response.output_text == "Done"
    assert [item.type for item in response.output] == ["reasoning", "reasoning", "message"]  # human, helper, answer
    # the two responses of the run add up to its usage
    assert response.usage is not None and (response.usage.input_tokens, response.usage.output_tokens) == (21, 4)
    assert first[-1]["response"]["usage"]["total_tokens"] + response.usage.total_tokens == 37
    # any resume point of it gives exactly the later events
    for cut in out:
        n = cut["sequence_number"]
        later = [e for e in translate_run(log, ResponsesTranslator("resp_x-6", "demo", 1, resumes_at=6))]
        assert [e for e in later if e["sequence_number"] > n] == out[out.index(cut) + 1 :]
