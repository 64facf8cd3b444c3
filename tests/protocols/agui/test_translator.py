"""The AG-UI translator on recorded runs' envelopes (``recorded/``: stored logs of fake-model runs).

Each stream it makes is judged by ``ag-ui-validate``'s core rules in process (every severity
counts) and read back through the official package's ``Event`` union, then checked against the
run it came from: the text, the turns, the tools, the usage.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from ag_ui.core import Event
from ag_ui_validate.pytest_plugin import validate_agui
from pydantic import TypeAdapter

from app.core.envelope import Envelope, parse_at
from app.core.vocabulary import EventType
from app.protocols.agui.translator import Translator, frame, frames, interrupt_id

RECORDED = Path(__file__).with_name("recorded")
EVENT: TypeAdapter[Any] = TypeAdapter(Event)


def recorded(name: str) -> tuple[dict[str, Any], list[Envelope]]:
    d = json.loads((RECORDED / f"{name}.json").read_text())
    envs = [Envelope(e["run_id"], e["seq"], e["type"], parse_at(e["at"]), e["data"]) for e in d["events"]]
    return d["run"], envs


def translate(envs: list[Envelope], batch: int = 3) -> list[dict[str, Any]]:
    """The AG-UI stream of ``envs``, written in batches as the router writes them, parsed back."""
    translator = Translator("thread_1", "run_1")
    body = b"".join(frames(translator, envs[i : i + batch]) for i in range(0, len(envs), batch))
    chunks = body.split(b"\n\n")
    assert chunks[-1] == b"" and all(c.startswith(b"data: ") for c in chunks[:-1])
    events = [orjson.loads(c[len(b"data: ") :]) for c in chunks[:-1]]
    for event in events:
        EVENT.validate_python(event)  # each one is a valid event of the official package
    return events


def assert_conformant(events: list[dict[str, Any]]) -> None:
    report = validate_agui(events)
    assert [(d.rule, d.message) for d in report.diagnostics] == []


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.parametrize("name", ["pair", "tool", "swarm", "failed", "chain", "asking", "reasoning"])
def test_every_recorded_run_translates_to_a_conformant_stream(name: str) -> None:
    _, envs = recorded(name)
    events = translate(envs)
    assert_conformant(events)
    assert events[0]["type"] == "RUN_STARTED" and events[0]["protocolVersion"] == "1.0"
    assert {(e.get("threadId"), e.get("runId")) for e in events if "runId" in e} == {("thread_1", "run_1")}
    assert all(isinstance(e["timestamp"], int) for e in events)


def test_usage_is_per_provider_and_model_when_the_run_has_it() -> None:
    _run, envs = recorded("pair")
    end = envs[-1]
    by_model = [
        {"model": "anthropic/claude-sonnet-4-5", "prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37},
        {"model": "openai/gpt-4o-mini", "prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    ]
    usage = {"prompt_tokens": 42, "completion_tokens": 12, "total_tokens": 54, "by_model": by_model}
    completed = Envelope(end.run_id, end.seq, end.type, end.at, {**end.data, "usage": usage})
    events = translate([*envs[:-1], completed])
    assert_conformant(events)
    assert events[-1]["usage"] == [
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "inputTokens": 30,
            "outputTokens": 7,
            "totalTokens": 37,
        },
        {"provider": "openai", "model": "gpt-4o-mini", "inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
    ]


def test_a_multi_agent_run_is_turns_of_subagents_with_the_runs_text_and_usage() -> None:
    run, envs = recorded("pair")
    events = translate(envs)
    assert events[-1]["type"] == "RUN_FINISHED"
    assert events[-1]["outcome"] == {"type": "success"}
    usage = run["usage"]
    assert events[-1]["usage"] == [
        {
            "inputTokens": usage["prompt_tokens"],
            "outputTokens": usage["completion_tokens"],
            "totalTokens": usage["total_tokens"],
        }
    ]
    assert events[-1]["result"] == run["result"]["text"]
    # one subagent per agent turn, in the order the agents spoke, each closed before the next opens
    turns = [e for e in events if e["type"].startswith("SUBAGENT_")]
    speakers = [e.data["agent"] for e in envs if e.type == "message.completed" and e.data["agent"] != "user"]
    assert [e["name"] for e in turns if e["type"] == "SUBAGENT_STARTED"] == speakers
    assert types(turns) == ["SUBAGENT_STARTED", "SUBAGENT_FINISHED"] * len(speakers)
    # each message's text is its deltas, started with the agent's name, inside its agent's turn
    text: dict[str, list[str]] = defaultdict(list)
    owner: dict[str, str] = {}
    for e in events:
        if e["type"] == "TEXT_MESSAGE_START":
            assert e["role"] == "assistant"
            owner[e["messageId"]] = e["name"]
        elif e["type"] == "TEXT_MESSAGE_CONTENT":
            text[e["messageId"]].append(e["delta"])
    said = [e.data for e in envs if e.type == "message.completed" and e.data["agent"] != "user"]
    completed = {d["message_id"]: d for d in said}
    assert {mid: "".join(parts) for mid, parts in text.items()} == {mid: d["text"] for mid, d in completed.items()}
    assert owner == {mid: d["agent"] for mid, d in completed.items()}
    # the task is the client's own message: never echoed
    task = next(e.data["text"] for e in envs if e.type == "message.completed" and e.data["agent"] == "user")
    assert task not in text.values()


def test_a_tool_call_is_start_args_end_and_its_result() -> None:
    _, envs = recorded("tool")
    events = translate(envs)
    call = next(e.data for e in envs if e.type == "tool.call")
    result = next(e.data for e in envs if e.type == "tool.result")
    tool = [e for e in events if e["type"].startswith("TOOL_CALL_")]
    assert types(tool) == ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]
    assert {e["toolCallId"] for e in tool} == {call["call_id"]}
    assert tool[0]["toolCallName"] == "calculator"
    assert json.loads(tool[1]["delta"]) == json.loads(call["arguments"])
    assert tool[3]["content"] == result["content"] == "42"
    # the whole turn, call and answer, is the solver's one subagent
    assert len({e["subagentRunId"] for e in tool}) == 1


def test_a_hand_off_is_a_namespaced_custom_event_between_the_two_turns() -> None:
    _, envs = recorded("swarm")
    events = translate(envs)
    handoff = next(e for e in events if e["type"] == "CUSTOM")
    assert handoff["name"] == "swarmdirector.handoff"
    assert (handoff["value"]["source"], handoff["value"]["target"]) == ("triage", "expert")
    names = [e["name"] for e in events if e["type"] == "SUBAGENT_STARTED"]
    assert names[:2] == ["triage", "expert"]


def test_a_failed_run_ends_with_run_error_and_its_code() -> None:
    run, envs = recorded("failed")
    events = translate(envs)
    assert run["status"] == "failed"
    assert events[-1]["type"] == "RUN_ERROR"
    assert events[-1]["code"] == run["error"]["code"]
    assert events[-1]["message"] == run["error"]["message"]
    assert "RUN_FINISHED" not in types(events)


def test_a_cancelled_run_finishes_with_the_cancelled_outcome_and_closes_what_was_open() -> None:
    _, envs = recorded("pair")
    cut = next(i for i, e in enumerate(envs) if e.type == "message.delta")
    last = envs[cut + 1]
    cancelled = Envelope(
        last.run_id,
        last.seq + 1,
        "run.cancelled",
        last.at,
        {"status": "cancelled", "reason": "cancelled", "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    )
    events = translate([*envs[: cut + 2], cancelled])
    assert_conformant(events)  # the message cut in the middle, and its turn, are closed before the end
    assert types(events)[-3:] == ["TEXT_MESSAGE_END", "SUBAGENT_FINISHED", "RUN_FINISHED"]
    assert events[-1]["outcome"] == {"type": "cancelled"}
    assert events[-1]["usage"] == [{"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}]


def test_a_chain_step_is_a_step_and_its_parallel_branches_overlapping_subagents() -> None:
    _, envs = recorded("chain")
    events = translate(envs)
    steps = [(e["type"], e["stepName"]) for e in events if e["type"].startswith("STEP_")]
    assert steps == [(kind, f"step {n}") for n in (1, 2) for kind in ("STEP_STARTED", "STEP_FINISHED")]
    second = types(events).index("STEP_STARTED", types(events).index("STEP_FINISHED"))
    in_step_2 = events[second : types(events).index("STEP_FINISHED", second)]
    started = {e["name"] for e in in_step_2 if e["type"] == "SUBAGENT_STARTED"}
    assert started == {"critic", "writer"}


def test_a_stream_joined_mid_run_still_opens_with_run_started_and_sends_nothing_after_the_end() -> None:
    _, envs = recorded("pair")
    start = next(i for i, e in enumerate(envs) if e.type == "message.completed" and e.data["agent"] != "user")
    events = translate(envs[start + 1 :])
    assert_conformant(events)
    assert types(events)[0] == "RUN_STARTED"
    translator = Translator("thread_1", "run_1")
    for env in envs:
        translator(env)
    assert translator(envs[-1]) == []  # after the terminal event: nothing


def test_an_empty_delta_is_not_sent() -> None:
    _, envs = recorded("pair")
    delta = next(e for e in envs if e.type == "message.delta")
    empty = Envelope(delta.run_id, delta.seq, "message.delta", delta.at, {**delta.data, "text": ""})
    events = translate([envs[0], empty])
    assert types(events) == ["RUN_STARTED"]


def test_a_request_for_a_person_ends_the_stream_as_an_interrupt_and_the_rest_is_the_resumed_run() -> None:
    run, envs = recorded("asking")
    asked = next(i for i, e in enumerate(envs) if e.type == "input.requested")
    request = envs[asked].data
    paused = translate(envs)  # the whole log: the stream stops at the request
    assert_conformant(paused)
    assert paused[-1]["type"] == "RUN_FINISHED"
    assert paused[-1]["outcome"] == {
        "type": "interrupt",
        "interrupts": [
            {
                "id": interrupt_id(envs[0].run_id, request["request_id"]),
                "reason": "input_required",
                "message": request["prompt"],
                "metadata": {"agent": "human"},
            }
        ],
    }
    resumed = translate(envs[asked + 1 :])  # what a resume streams: after the request
    assert_conformant(resumed)
    assert types(resumed)[:3] == ["RUN_STARTED", "SUBAGENT_STARTED", "CUSTOM"]  # the person's turn: the answer
    assert resumed[1]["name"] == "human" and resumed[2]["name"] == "swarmdirector.input_received"
    assert resumed[-1]["outcome"] == {"type": "success"} and resumed[-1]["result"] == run["result"]["text"]


def test_a_reconnected_stream_sends_the_threads_earlier_messages_as_a_snapshot_first() -> None:
    _, envs = recorded("pair")
    history = [("m1", "user", "Earlier task."), ("m2", "writer", "Earlier answer.")]
    translator = Translator("thread_1", "run_1", history)
    events = [orjson.loads(e.model_dump_json(by_alias=True)) for env in envs for e in translator(env)]
    assert_conformant(events)
    assert types(events)[:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
    assert events[1]["messages"] == [
        {"id": "m1", "role": "user", "content": "Earlier task."},
        {"id": "m2", "role": "assistant", "name": "writer", "content": "Earlier answer."},
    ]
    assert types(events).count("MESSAGES_SNAPSHOT") == 1


def test_the_fast_frame_of_a_delta_is_the_frame_the_packages_model_makes() -> None:
    _, envs = recorded("pair")
    first = next(i for i, e in enumerate(envs) if e.type == "message.delta")
    later = next(e for e in envs[first + 1 :] if e.type == "message.delta" and e.data["text"])
    translator = Translator("thread_1", "run_1")
    for env in envs[: first + 1]:
        translator(env)
    fast = translator.delta_frame(later)
    (event,) = translator(later)  # the same delta through the models
    assert fast == frame(event)
    unopened = Envelope(later.run_id, later.seq, "message.delta", later.at, {**later.data, "message_id": "other"})
    assert translator.delta_frame(unopened) is None  # its TEXT_MESSAGE_START comes first, through the models


def test_a_models_reasoning_is_a_reasoning_span_in_its_agents_turn_closed_before_its_answer() -> None:
    _, envs = recorded("reasoning")
    events = translate(envs)
    said = [e.data for e in envs if e.type == "message.completed" and e.data["agent"] != "user"]
    assert [d["agent"] for d in said] == ["writer", "critic"] and all(d["reasoning"] for d in said)
    for d in said:
        mid = d["message_id"]
        text_start = next(i for i, e in enumerate(events) if e.get("messageId") == mid)
        mine = [e for e in events[:text_start] if e["type"].startswith("REASONING_") and mid in e["messageId"]]
        # one span, one reasoning message of its own id, all of it before the answer starts
        assert types(mine) == [
            "REASONING_START",
            "REASONING_MESSAGE_START",
            *["REASONING_MESSAGE_CONTENT"] * (len(mine) - 4),
            "REASONING_MESSAGE_END",
            "REASONING_END",
        ]
        rid = mine[1]["messageId"]
        assert rid != mid and mine[1]["role"] == "reasoning" and mine[0]["messageId"] != rid
        assert "".join(e["delta"] for e in mine if e["type"] == "REASONING_MESSAGE_CONTENT") == d["reasoning"]
        # inside the agent's subagent, the same one as its answer
        assert {e["subagentRunId"] for e in mine} == {events[text_start]["subagentRunId"]}
    assert "THINKING_START" not in types(events)


def _reasoning_then(envs: list[Envelope], kind: EventType, data: dict[str, Any]) -> list[Envelope]:
    """The recorded run up to the writer's reasoning (its answer not begun), then one more envelope."""
    cut = next(i for i, e in enumerate(envs) if e.type == "message.delta")
    last = envs[cut - 1]
    assert last.type == "reasoning.delta"
    return [*envs[:cut], Envelope(last.run_id, last.seq + 1, kind, last.at, data)]


def test_reasoning_that_ends_in_tool_calls_or_a_cancel_is_closed_first() -> None:
    _, envs = recorded("reasoning")
    call = {"call_id": "call_1", "name": "calculator", "arguments": "{}", "agent": "writer"}
    events = translate(_reasoning_then(envs, "tool.call", call))
    assert types(events)[-5:] == [
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
    ]
    assert len({e["subagentRunId"] for e in events[-5:]}) == 1  # the call is the same turn's
    cancelled = {"status": "cancelled", "reason": "cancelled", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    events = translate(_reasoning_then(envs, "run.cancelled", cancelled))
    assert_conformant(events)
    assert types(events)[-4:] == ["REASONING_MESSAGE_END", "REASONING_END", "SUBAGENT_FINISHED", "RUN_FINISHED"]


def test_reasoning_a_stream_replays_is_a_message_of_its_own() -> None:
    _, envs = recorded("reasoning")
    first = next(i for i, e in enumerate(envs) if e.type == "reasoning.delta")
    whole = translate(envs)
    replayed = translate(envs[first - 1 :])  # a reconnect that starts before the reasoning
    assert_conformant(replayed)
    ids = {e["messageId"] for e in whole if e["type"] == "REASONING_MESSAGE_START"}
    again = {e["messageId"] for e in replayed if e["type"] == "REASONING_MESSAGE_START"}
    assert len(ids) == len(again) == 2 and not ids & again  # a client that kept a cut one gets a new one
    assert translate(envs) == whole  # the same start, the same ids: replaying a resume repeats it exactly


def test_the_fast_frame_of_a_reasoning_delta_is_the_frame_the_packages_model_makes() -> None:
    _, envs = recorded("reasoning")
    first = next(i for i, e in enumerate(envs) if e.type == "reasoning.delta")
    translator = Translator("thread_1", "run_1")
    assert translator.reasoning_frame(envs[first]) is None  # nothing open yet
    for env in envs[: first + 1]:
        translator(env)
    later = envs[first + 1]
    fast = translator.reasoning_frame(later)
    (event,) = translator(later)
    assert fast == frame(event) and b'"REASONING_MESSAGE_CONTENT"' in fast
    empty = Envelope(later.run_id, later.seq, "reasoning.delta", later.at, {**later.data, "text": ""})
    assert translator.reasoning_frame(empty) == b"" and translator(empty) == []


def test_a_run_resumed_after_a_crash_ends_the_abandoned_message_and_goes_on_conformant() -> None:
    _, envs = recorded("pair")
    deltas = [i for i, e in enumerate(envs) if e.type == "message.delta"]
    cut = deltas[len(deltas) // 2]  # the crash comes mid-message
    abandoned = envs[cut].data["message_id"]
    start = next(i for i, e in enumerate(envs) if e.data.get("message_id") == abandoned)  # its first delta
    lost_after = envs[cut].seq
    requeued = Envelope(
        "run_1",
        lost_after + 8193,
        "run.requeued",
        envs[cut].at,
        {
            "reason": "server_restarted",
            "attempt": 1,
            "max_attempts": 2,
            "lost_after_seq": lost_after,
            "abandoned_message_ids": [abandoned],
        },
    )
    resumed = Envelope("run_1", requeued.seq + 1, "run.resumed", envs[cut].at, {"attempt": 2, "checkpoint_seq": 5})
    remade = []
    for offset, e in enumerate(envs[start:], start=2):
        data = dict(e.data)
        if data.get("message_id") == abandoned:
            data["message_id"] = "remade"  # the turn made again is a new message
        remade.append(Envelope("run_1", requeued.seq + offset, e.type, e.at, data))
    events = translate([*envs[: cut + 1], requeued, resumed, *remade])
    assert_conformant(events)
    kinds = types(events)
    custom = next(i for i, e in enumerate(events) if e.get("name") == "swarmdirector.run_requeued")
    ends = [i for i, e in enumerate(events) if e["type"] == "TEXT_MESSAGE_END" and e["messageId"] == abandoned]
    assert ends and ends[0] < custom, "the abandoned message is ended before the requeue is told"
    assert events[custom]["value"]["abandoned_message_ids"] == [abandoned]
    assert kinds.count("RUN_FINISHED") == 1 and kinds[-1] == "RUN_FINISHED"
    assert any(e["type"] == "TEXT_MESSAGE_START" and e["messageId"] == "remade" for e in events)
