"""The OpenAI-compatible API driven by the official ``openai`` SDK against a real uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from app.auth.service import LOCAL_PRINCIPAL
from tests.conftest import LiveServer, make_settings
from tests.fixtures.principals import api_key_headers
from tests.fixtures.specs import agent, team


async def _run_of(client: httpx.AsyncClient, completion_id: str) -> dict[str, Any]:
    assert completion_id.startswith("chatcmpl-run_")
    response = await client.get(f"/v1/runs/{completion_id.removeprefix('chatcmpl-')}")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()
    return run


async def _messages(client: httpx.AsyncClient, run_id: str) -> list[dict[str, Any]]:
    page = (await client.get(f"/v1/runs/{run_id}/events/page", params={"limit": 1000})).json()
    return [e["data"] for e in page["data"] if e["type"] == "message.completed" and e["data"]["agent"] != "user"]


async def test_models_are_the_principals_teams(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    made = await live_client.post("/v1/teams", json=team("pair"))
    assert made.status_code == 201, made.text
    models = await sdk.models.list()
    assert sorted(m.id for m in models.data) == ["demo", "pair"]
    assert {m.object for m in models.data} == {"model"}


async def test_streamed_chat_is_the_runs_result_with_inner_turns_as_reasoning(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    stream = await sdk.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Write a haiku about rivers."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content: list[str] = []
    reasoning: list[str] = []
    chunks = [chunk async for chunk in stream]
    for chunk in chunks:
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
    run = await _run_of(live_client, chunks[0].id)
    assert run["status"] == "succeeded"
    assert "".join(content) == run["result"]["text"]
    # every agent turn is in the reasoning, each under its agent's name
    turns = await _messages(live_client, run["id"])
    assert len(turns) == run["message_count"] - 1 >= 2
    joined = "".join(reasoning)
    for turn in turns:
        assert f"**{turn['agent']}**: {turn['text']}" in joined
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = run["usage"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


async def test_non_streamed_chat_answers_the_same(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    completion = await sdk.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Write a haiku about rivers."}]
    )
    run = await _run_of(live_client, completion.id)
    assert completion.choices[0].message.content == run["result"]["text"]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == run["usage"]["total_tokens"]
    reasoning = getattr(completion.choices[0].message, "reasoning_content", "")
    assert "**writer**: " in reasoning and "**critic**: " in reasoning


async def test_inner_turns_can_be_left_out(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    stream = await sdk.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], stream=True, extra_body={"include_reasoning": False}
    )
    chunks = [chunk async for chunk in stream]
    assert not any(getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks if c.choices)
    run = await _run_of(live_client, chunks[0].id)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == run["result"]["text"]


async def test_tool_calls_and_handoffs_stream_as_reasoning(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    planner_script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"handoff": "solver"},
    ]
    members = [
        agent("planner", tools=["calculator"], handoffs=["solver"], model_options={"script": planner_script}),
        agent("solver", handoffs=["planner"], model_options={"script": [{"text": "It is 42. TERMINATE"}]}),
    ]
    spec = team("swarmy", kind="swarm", members=members, max_messages=8, termination={"text_mention": "TERMINATE"})
    assert (await live_client.post("/v1/teams", json=spec)).status_code == 201
    completion = await sdk.chat.completions.create(model="swarmy", messages=[{"role": "user", "content": "6 x 7?"}])
    reasoning = getattr(completion.choices[0].message, "reasoning_content", "")
    assert "**planner** calls `calculator(" in reasoning
    assert "`calculator` returned: 42" in reasoning
    assert "**planner** hands off to **solver**" in reasoning
    assert completion.choices[0].message.content == "It is 42. TERMINATE"


async def test_earlier_messages_become_the_tasks_transcript(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    completion = await sdk.chat.completions.create(
        model="demo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a river."},
            {"role": "assistant", "content": "The Loire."},
            {"role": "user", "content": [{"type": "text", "text": "Now a haiku about it."}]},
        ],
    )
    run = await _run_of(live_client, completion.id)
    assert run["task"] == (
        "The conversation so far:\n\nsystem: Be brief.\n\nuser: Name a river.\n\nassistant: The Loire."
        "\n\nThe new message:\n\nNow a haiku about it."
    )


async def test_a_pinned_conversation_continues_and_stays_its_owners(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    alice = await api_key_headers(live_server.app, "alice")
    bob = await api_key_headers(live_server.app, "bob")
    for owner in (alice, bob):  # a team of the same name each: the conversation is what bob may not use
        assert (await live_client.post("/v1/teams", json=team("pair"), headers=owner)).status_code == 201
    base_url = f"{live_server.url}/openai/v1"
    as_alice = AsyncOpenAI(base_url=base_url, api_key=alice["authorization"].removeprefix("Bearer "), max_retries=0)
    as_bob = AsyncOpenAI(base_url=base_url, api_key=bob["authorization"].removeprefix("Bearer "), max_retries=0)
    async with as_alice, as_bob:
        first = await as_alice.chat.completions.with_raw_response.create(
            model="pair", messages=[{"role": "user", "content": "secret plans"}]
        )
        conversation = first.headers["x-swarm-conversation"]
        second = await as_alice.chat.completions.create(
            model="pair",
            messages=[
                {"role": "user", "content": "ignored: the conversation has it"},
                {"role": "user", "content": "go on"},
            ],
            extra_headers={"X-Swarm-Conversation": conversation},
        )
        run = await _run_of(httpx.AsyncClient(base_url=live_server.url, headers=alice), second.id)
        assert (run["conversation_id"], run["task"]) == (conversation, "go on")
        with pytest.raises(openai.NotFoundError) as caught:
            await as_bob.chat.completions.create(
                model="pair",
                messages=[{"role": "user", "content": "let me in"}],
                extra_headers={"X-Swarm-Conversation": conversation},
            )
        assert [m.id for m in (await as_bob.models.list()).data] == ["pair"]
    assert caught.value.status_code == 404 and caught.value.code == "not_found"
    assert conversation in caught.value.message
    runs = (await live_client.get("/v1/runs", headers=alice)).json()["data"]
    assert len(runs) == 2  # bob's request started nothing in alice's conversation


async def test_user_names_the_conversation_to_continue(sdk: AsyncOpenAI, live_client: httpx.AsyncClient) -> None:
    hello = [{"role": "user", "content": "hello"}]
    first = await sdk.chat.completions.with_raw_response.create(model="demo", messages=hello, user="alice-1234")
    conversation = first.headers["x-swarm-conversation"]
    run = (await live_client.get(f"/v1/runs/{first.headers['x-swarm-run']}")).json()
    # an end user's id, as OpenAI has `user`, pins nothing: it is kept with the run
    assert run["metadata"]["openai.user"] == "alice-1234" and conversation.startswith("conv_")
    go_on = [{"role": "user", "content": "before: not sent"}, {"role": "user", "content": "go on"}]
    second = await sdk.chat.completions.with_raw_response.create(model="demo", messages=go_on, user=conversation)
    run = (await live_client.get(f"/v1/runs/{second.headers['x-swarm-run']}")).json()
    assert (run["conversation_id"], run["task"]) == (conversation, "go on")
    assert "openai.user" not in run["metadata"]
    with pytest.raises(openai.BadRequestError) as both:
        await sdk.chat.completions.create(
            model="demo", messages=go_on, user=conversation, extra_headers={"X-Swarm-Conversation": "conv_other"}
        )
    assert both.value.code == "conversation_conflict"
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="demo", messages=go_on, user="conv_01NOSUCHCONVERSATION0000")
    assert len((await live_client.get("/v1/runs")).json()["data"]) == 2


async def test_a_person_is_asked_in_the_answer_and_the_next_message_answers(
    sdk: AsyncOpenAI, live_client: httpx.AsyncClient
) -> None:
    asking = team(
        "asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4
    )
    assert (await live_client.post("/v1/teams", json=asking)).status_code == 201
    plan = [{"role": "user", "content": "Plan a trip."}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="asking", messages=plan, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in raw.parse()]
    run_id, conversation = raw.headers["x-swarm-run"], raw.headers["x-swarm-conversation"]
    # the completion ends with the person's question as its answer; the run waits for them
    question = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run = (await live_client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "awaiting_input"
    events = (await live_client.get(f"/v1/runs/{run_id}/events/page", params={"limit": 1000})).json()["data"]
    (asked,) = [e["data"] for e in events if e["type"] == "input.requested"]
    assert question == asked["prompt"] != ""
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    first_usage = chunks[-1].usage
    assert first_usage is not None and first_usage.total_tokens > 0

    # the next message, pinned to the conversation, is the answer; the completion is the run on
    answer = [*plan, {"role": "assistant", "content": question}, {"role": "user", "content": "Paris, in May."}]
    raw = await sdk.chat.completions.with_raw_response.create(
        model="asking", messages=answer, user=conversation, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in raw.parse()]
    assert raw.headers["x-swarm-run"] == run_id
    run = (await live_client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "succeeded"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == run["result"]["text"] != ""
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert "Plan a trip" not in reasoning  # the completion starts where the question was asked
    second_usage = chunks[-1].usage
    assert second_usage is not None
    assert first_usage.total_tokens + second_usage.total_tokens == run["usage"]["total_tokens"]
    messages = (await live_client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    assert [m["text"] for m in messages if m["agent"] == "human"] == ["Paris, in May."]
    assert len((await live_client.get("/v1/runs")).json()["data"]) == 1  # no run was started for the answer


async def test_errors_are_the_sdks_own_classes(
    sdk: AsyncOpenAI, live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    message = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="no-such-team", messages=message)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found" and "no-such-team" in missing.value.message
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        await sdk.chat.completions.create(model="demo", messages=message, tools=[tool])  # type: ignore[arg-type,list-item]
    assert tools.value.code == "tools_not_supported" and "tools" in tools.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        await sdk.chat.completions.create(model="demo", messages=[])
    assert invalid.value.code == "invalid_request"
    body = invalid.value.body
    assert isinstance(body, dict) and body["param"] == "messages" and body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as last:
        await sdk.chat.completions.create(model="demo", messages=[{"role": "system", "content": "hi"}])
    assert last.value.code == "invalid_messages"
    with pytest.raises(openai.BadRequestError) as blank:
        await sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "  "}])
    assert blank.value.code == "invalid_messages" and "no task" in blank.value.message
    runs = (await live_client.get("/v1/runs")).json()["data"]
    assert runs == []  # nothing was started by any of them
    async with AsyncOpenAI(base_url=f"{live_server.url}/openai/v1", api_key="sd_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as denied:
            await wrong.models.list()
    assert denied.value.status_code == 401 and isinstance(denied.value.body, dict)


async def test_errors_before_any_route_are_openai_errors_too(
    live_server: LiveServer, local_key: dict[str, str]
) -> None:
    """Unknown paths and the body size limit answer before a route does: in OpenAI's shape still,
    while ``/v1`` keeps problem+json."""
    async with live_server.client() as client:
        unknown = await client.get("/openai/v1/nothing-here", headers=local_key)
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/json"
        assert unknown.json()["error"]["type"] == "invalid_request_error"
        huge = "x" * (live_server.services.settings.max_body_bytes + 1)
        too_large = await client.post("/openai/v1/chat/completions", content=huge)
        assert too_large.status_code == 413
        assert too_large.json()["error"]["code"] == "payload_too_large"
        problem = await client.get("/v1/runs/run_missing")
        assert problem.headers["content-type"] == "application/problem+json"


async def test_a_start_over_the_limits_is_the_sdks_rate_limit_error(tmp_path: Path) -> None:
    with LiveServer(make_settings(tmp_path, max_runs_per_minute=1)) as server:
        key = (await api_key_headers(server.app, LOCAL_PRINCIPAL))["authorization"].removeprefix("Bearer ")
        async with AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0) as client:
            message = [{"role": "user", "content": "hi"}]
            await client.chat.completions.create(model="demo", messages=message)  # type: ignore[arg-type]
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(model="demo", messages=message)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limited" and limited.value.response.headers["retry-after"]
    body = limited.value.body
    assert isinstance(body, dict) and body["type"] == "rate_limit_error"


async def test_the_task_and_live_run_limits_are_the_sdks_own_errors_in_both_apis(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_task_chars=50, max_live_runs_per_principal=1)
    with LiveServer(settings) as server:
        key = (await api_key_headers(server.app, LOCAL_PRINCIPAL))["authorization"].removeprefix("Bearer ")
        async with AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0) as client:
            long = [{"role": "user", "content": "x" * 51}]
            with pytest.raises(openai.BadRequestError) as chat_long:
                await client.chat.completions.create(model="demo", messages=long)  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError) as response_long:
                await client.responses.create(model="demo", input="x" * 51)
            slow = team("slow", model="fake/t400-d5", max_messages=6)
            async with server.client() as plain:
                auth = {"authorization": f"Bearer {key}"}
                assert (await plain.post("/v1/teams", json=slow, headers=auth)).status_code == 201
                going = await client.responses.create(model="slow", input="go on", background=True)
                hi = [{"role": "user", "content": "hi"}]
                with pytest.raises(openai.RateLimitError) as chat_busy:
                    await client.chat.completions.create(model="demo", messages=hi)  # type: ignore[arg-type]
                with pytest.raises(openai.RateLimitError) as response_busy:
                    await client.responses.create(model="demo", input="hi")
                runs = (await plain.get("/v1/runs", headers=auth)).json()["data"]
                await client.responses.cancel(going.id)
    for caught in (chat_long, response_long):
        assert caught.value.code == "task_too_long" and "50 characters" in caught.value.message
    for busy in (chat_busy, response_busy):
        assert busy.value.code == "too_many_live_runs" and busy.value.response.headers["retry-after"]
    assert [r["id"] for r in runs] == [going.id.removeprefix("resp_")]  # none of the refused started a run


async def test_an_open_server_takes_whatever_key_the_sdk_sends(live_server: LiveServer) -> None:
    """On loopback with no key created (`make run`), `/v1` needs no key; the SDKs insist on sending
    one, so the dialect takes any key there, as local OpenAI-compatible servers do."""
    base_url = f"{live_server.url}/openai/v1"
    async with AsyncOpenAI(base_url=base_url, api_key="anything", max_retries=0) as sdk:
        assert [m.id for m in (await sdk.models.list()).data] == ["demo"]
        done = await sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hi."}])
        assert done.choices[0].message.content
    # once a key exists, the server is keyed: a key it does not know is refused
    await api_key_headers(live_server.app, LOCAL_PRINCIPAL)
    async with AsyncOpenAI(base_url=base_url, api_key="anything", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()
