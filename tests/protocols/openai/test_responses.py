"""The Responses API driven by the official ``openai`` SDK against a real uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import ResponseFunctionToolCall, ResponseStreamEvent

from tests.conftest import LiveServer
from tests.fixtures.principals import api_key_headers
from tests.fixtures.specs import agent, team

SLOW = "fake/t400-d5"  # two seconds a reply: still going while the test acts


async def _run(client: httpx.AsyncClient, resp_id: str) -> dict[str, Any]:
    assert resp_id.startswith("resp_run_")
    response = await client.get(f"/v1/runs/{resp_id.removeprefix('resp_')}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def _until(check: Callable[[], Awaitable[bool]], deadline_s: float = 30.0) -> None:
    async with asyncio.timeout(deadline_s):
        while not await check():
            await asyncio.sleep(0.05)


def _usage(run: dict[str, Any]) -> tuple[int, int, int]:
    usage = run["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


def _dump(events: list[ResponseStreamEvent]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


async def test_a_response_is_the_runs_result_with_inner_turns_as_reasoning(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    response = await sdk.responses.create(model="demo", input="Write a haiku about rivers.")
    run = await _run(live_client, response.id)
    assert run["status"] == "succeeded" and response.status == "completed"
    assert response.output_text == run["result"]["text"] != ""
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == _usage(run)
    kinds = [item.type for item in response.output]
    assert kinds[-1] == "message" and set(kinds[:-1]) == {"reasoning"} and len(kinds) == run["message_count"]
    reasoning = [item.content[0].text for item in response.output if item.type == "reasoning" and item.content]
    assert reasoning[0].startswith("**writer**: ") and reasoning[1].startswith("**critic**: ")
    # a read of it later is the same response
    again = await sdk.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()


async def test_a_streamed_response_sends_the_standard_events_in_order(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    stream = await sdk.responses.create(model="demo", input="Write a haiku about rivers.", stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-7:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.reasoning_text.delta" in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))  # strictly increasing
    completed = events[-1]
    assert completed.type == "response.completed"
    run = await _run(live_client, completed.response.id)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == completed.response.output_text == run["result"]["text"]
    assert (
        completed.response.usage is not None and completed.response.usage.total_tokens == run["usage"]["total_tokens"]
    )
    # every item added is done, at the same output index
    added = {e.output_index: e.item.id for e in events if e.type == "response.output_item.added"}
    done = {e.output_index: e.item.id for e in events if e.type == "response.output_item.done"}
    assert added == done and sorted(added) == list(range(len(completed.response.output)))


async def test_inner_turns_can_be_left_out(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="demo", input="hi", extra_body={"include_reasoning": False})
    assert [item.type for item in response.output] == ["message"]
    again = await sdk.responses.retrieve(response.id)  # the option is the response's, read later too
    assert [item.type for item in again.output] == ["message"]


async def test_a_dropped_background_stream_resumes_after_its_last_sequence_number(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    steady = team("steady", model="fake/t40-d5", max_messages=4)  # a run still going when the stream drops, mostly
    assert (await live_client.post("/v1/teams", json=steady)).status_code == 201
    stream = await sdk.responses.create(model="steady", input="Write a haiku.", background=True, stream=True)
    seen: list[ResponseStreamEvent] = []
    async for event in stream:
        seen.append(event)
        if event.type == "response.reasoning_text.delta" and len(seen) > 8:
            break
    await stream.close()  # the connection is dropped; the run goes on
    resp_id = seen[0].response.id if seen[0].type == "response.created" else ""
    n = seen[-1].sequence_number
    resumed = [e async for e in await sdk.responses.retrieve(resp_id, stream=True, starting_after=n)]
    whole = [e async for e in await sdk.responses.retrieve(resp_id, stream=True)]
    assert resumed[-1].type == "response.completed"
    assert _dump(whole[: len(seen)]) == _dump(seen)  # the same log gives the same events, numbered alike
    assert _dump(resumed) == _dump([e for e in whole if e.sequence_number > n])
    assert _dump(seen + resumed) == _dump(whole)  # every event exactly once, none missing
    assert (await _run(live_client, resp_id))["status"] == "succeeded"


async def test_a_background_response_answers_at_once_and_is_read_later(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    started = await sdk.responses.create(model="demo", input="hi", background=True)
    assert started.status == "queued" and started.background is True and started.output == []

    async def completed() -> bool:
        return (await sdk.responses.retrieve(started.id)).status == "completed"

    await _until(completed)
    run = await _run(live_client, started.id)
    assert (await sdk.responses.retrieve(started.id)).output_text == run["result"]["text"]


async def test_cancel_ends_the_run_cancelled(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    assert (await live_client.post("/v1/teams", json=team("slow", model=SLOW, max_messages=6))).status_code == 201
    started = await sdk.responses.create(model="slow", input="go on and on", background=True)

    async def running() -> bool:
        return bool((await _run(live_client, started.id))["status"] == "running")

    await _until(running)
    cancelled = await sdk.responses.cancel(started.id)
    assert cancelled.id == started.id

    async def ended() -> bool:
        return bool((await _run(live_client, started.id))["status"] == "cancelled")

    await _until(ended)
    final = await sdk.responses.retrieve(started.id)
    assert final.status == "cancelled" and final.error is None
    events = [e async for e in await sdk.responses.retrieve(started.id, stream=True)]
    assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"


async def test_instructions_and_earlier_messages_become_the_tasks_transcript(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    response = await sdk.responses.create(
        model="demo",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Name a river."},
            {"role": "assistant", "content": [{"type": "output_text", "text": "The Loire."}]},  # type: ignore[misc,list-item]
            {"role": "user", "content": [{"type": "input_text", "text": "Now a haiku about it."}]},
        ],
    )
    run = await _run(live_client, response.id)
    assert run["task"] == (
        "The conversation so far:\n\nsystem: Be brief.\n\nuser: Name a river.\n\nassistant: The Loire."
        "\n\nThe new message:\n\nNow a haiku about it."
    )


async def test_previous_response_id_continues_its_conversation(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    first = await sdk.responses.create(model="demo", input="Name a river.")
    second = await sdk.responses.create(model="demo", input="Now a haiku about it.", previous_response_id=first.id)
    one, two = await _run(live_client, first.id), await _run(live_client, second.id)
    assert two["conversation_id"] == one["conversation_id"]
    assert two["task"] == "Now a haiku about it."  # the conversation holds the context: no transcript
    assert second.previous_response_id == first.id


ASKING = team("asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


def _call(response: Any) -> ResponseFunctionToolCall:
    call = response.output[-1]
    assert isinstance(call, ResponseFunctionToolCall), response.output
    return call


async def test_a_person_is_a_human_input_call_answered_by_its_output(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    assert (await live_client.post("/v1/teams", json=ASKING)).status_code == 201
    first = await sdk.responses.create(model="asking", input="Plan a trip.")
    # the response ends as a model's function call does: completed, with the call; the run waits
    assert first.status == "completed" and first.output_text == ""
    call = _call(first)
    assert call.name == "human_input" and call.status == "completed" and call.call_id.startswith("call_")
    assert json.loads(call.arguments)["agent"] == "human"
    run = await _run(live_client, first.id)
    assert run["status"] == "awaiting_input"
    runs_before = len((await live_client.get("/v1/runs")).json()["data"])

    # other input while the call waits, a wrong call, or more than the answer: refused, nothing started
    with pytest.raises(openai.BadRequestError) as missing:
        await sdk.responses.create(model="asking", input="Something else.", previous_response_id=first.id)
    assert missing.value.code == "function_call_output_missing" and call.call_id in missing.value.message
    wrong = [{"type": "function_call_output", "call_id": "call_nope", "output": "Paris"}]
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.responses.create(model="asking", input=wrong, previous_response_id=first.id)  # type: ignore[arg-type,list-item]
    assert unknown.value.code == "unknown_call_id"
    answer = [{"type": "function_call_output", "call_id": call.call_id, "output": "Paris, in May."}]
    extra = [*answer, {"role": "user", "content": "And book it."}]
    with pytest.raises(openai.BadRequestError) as crowded:
        await sdk.responses.create(model="asking", input=extra, previous_response_id=first.id)  # type: ignore[arg-type,list-item]
    assert crowded.value.code == "unsupported_input"
    assert len((await live_client.get("/v1/runs")).json()["data"]) == runs_before
    assert (await _run(live_client, first.id))["status"] == "awaiting_input"

    # the answer: a new response, the same run on from the request
    stream = await sdk.responses.create(model="asking", input=answer, previous_response_id=first.id, stream=True)  # type: ignore[arg-type,list-item]
    events = [event async for event in stream]
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    completed = events[-1]
    assert completed.type == "response.completed"
    second = completed.response
    assert second.id != first.id and second.id.startswith(first.id) and second.previous_response_id == first.id
    run = await _run(live_client, first.id)
    assert run["status"] == "succeeded" and second.output_text == run["result"]["text"] != ""
    # the responses of one run add up to its usage
    assert first.usage is not None and second.usage is not None
    assert first.usage.total_tokens + second.usage.total_tokens == run["usage"]["total_tokens"]
    # the person's answer is in the conversation, once
    page = (await live_client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["text"] for m in page if m["agent"] == "human"] == ["Paris, in May."]

    # the same answer sent again answers nothing again: the same response, read from the log
    again = await sdk.responses.create(model="asking", input=answer, previous_response_id=first.id)  # type: ignore[arg-type,list-item]
    assert again.model_dump() == second.model_dump()
    page = (await live_client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["text"] for m in page if m["agent"] == "human"] == ["Paris, in May."]
    # each response reads back as it was sent, and resumes by sequence number
    assert (await sdk.responses.retrieve(first.id)).model_dump() == first.model_dump()
    n = events[3].sequence_number
    resumed = [e async for e in await sdk.responses.retrieve(second.id, stream=True, starting_after=n)]
    assert _dump(resumed) == _dump([e for e in events if e.sequence_number > n])
    # the conversation goes on from the last response
    third = await sdk.responses.create(model="asking", input="Thanks.", previous_response_id=second.id)
    assert (await _run(live_client, third.id))["conversation_id"] == run["conversation_id"]


async def test_errors_are_the_sdks_own_classes(
    sdk: AsyncOpenAI, live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.responses.create(model="no-such-team", input="hi")
    assert missing.value.code == "model_not_found" and "no-such-team" in missing.value.message
    with pytest.raises(openai.NotFoundError) as unknown:
        await sdk.responses.retrieve("resp_run_nothing")
    assert unknown.value.code == "response_not_found"
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    with pytest.raises(openai.BadRequestError) as tools:
        await sdk.responses.create(model="demo", input="hi", tools=[tool])  # type: ignore[list-item]
    assert tools.value.code == "tools_not_supported"
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]
    with pytest.raises(openai.BadRequestError) as content:
        await sdk.responses.create(model="demo", input=image)  # type: ignore[arg-type,list-item]
    assert content.value.code == "unsupported_content" and "input[0]" in content.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        await sdk.responses.create(model="demo", input=[], instructions="Be brief.")
    assert empty.value.code == "invalid_messages"
    call_output = [{"type": "function_call_output", "call_id": "c1", "output": "42"}]
    with pytest.raises(openai.BadRequestError) as unanchored:
        await sdk.responses.create(model="demo", input=call_output)  # type: ignore[arg-type,list-item]
    assert unanchored.value.code == "previous_response_id_missing"
    reference = [{"type": "item_reference", "id": "msg_1"}]
    with pytest.raises(openai.BadRequestError) as item:
        await sdk.responses.create(model="demo", input=reference)  # type: ignore[arg-type,list-item]
    assert item.value.code == "unsupported_input" and "function_call_output" in item.value.message
    assert (await live_client.get("/v1/runs")).json()["data"] == []  # nothing was started by any of them


async def test_another_principals_response_is_not_found(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    alice = await api_key_headers(live_server.app, "alice")
    bob = await api_key_headers(live_server.app, "bob")
    for owner in (alice, bob):
        assert (await live_client.post("/v1/teams", json=team("pair"), headers=owner)).status_code == 201
    base_url = f"{live_server.url}/openai/v1"
    as_alice = AsyncOpenAI(base_url=base_url, api_key=alice["authorization"].removeprefix("Bearer "), max_retries=0)
    as_bob = AsyncOpenAI(base_url=base_url, api_key=bob["authorization"].removeprefix("Bearer "), max_retries=0)
    async with as_alice, as_bob:
        mine = await as_alice.responses.create(model="pair", input="secret plans")
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: as_bob.responses.retrieve(mine.id),
            lambda: as_bob.responses.retrieve(mine.id, stream=True),
            lambda: as_bob.responses.cancel(mine.id),
            lambda: as_bob.responses.create(model="pair", input="let me in", previous_response_id=mine.id),
        ]
        for attempt in attempts:
            with pytest.raises(openai.NotFoundError) as caught:
                await attempt()
            assert caught.value.code == "response_not_found" and mine.id in caught.value.message
        assert (await as_alice.responses.retrieve(mine.id)).status == "completed"
    bobs = (await live_client.get("/v1/runs", headers=bob)).json()["data"]
    assert bobs == []  # bob's attempts started nothing
