"""Unit tests for the deterministic fake model client used by every other test and demo."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import HandoffMessage, ModelClientStreamingChunkEvent, TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    LLMMessage,
    ModelFamily,
    RequestUsage,
    SystemMessage,
    UserMessage,
)

from app.agents.schemas import ScriptStep as PublicScriptStep
from app.engine.fake import (
    FakeChatCompletionClient,
    FakeModelError,
    FakeStats,
    FakeVariant,
    ScriptStep,
    ScriptToolCall,
    parse_fake_variant,
)

HI: list[LLMMessage] = [UserMessage(content="hi", source="user")]


async def collect(
    stream: AsyncGenerator[str | CreateResult, None],
) -> tuple[list[str], CreateResult]:
    """Drain a stream, checking the protocol: text chunks first, exactly one CreateResult last."""
    chunks: list[str] = []
    result: CreateResult | None = None
    async for item in stream:
        assert result is None, "nothing may follow the CreateResult"
        if isinstance(item, CreateResult):
            result = item
        else:
            assert isinstance(item, str)
            chunks.append(item)
    assert result is not None
    return chunks, result


def text_client(
    *texts: str, variant: FakeVariant | None = None, stats: FakeStats | None = None
) -> FakeChatCompletionClient:
    return FakeChatCompletionClient(variant, script=[ScriptStep(text=t) for t in texts], stats=stats)


# --------------------------------------------------------------------------------------------------
# Variant grammar
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("default", FakeVariant()),
        ("t64-d20-f50", FakeVariant(words=64, delay_s=0.02, first_delay_s=0.05)),
        ("t8-end", FakeVariant(words=8, end=True)),
        ("end-t8", FakeVariant(words=8, end=True)),
        ("fail", FakeVariant(fail=True)),
        ("end", FakeVariant(end=True)),
        ("t1", FakeVariant(words=1)),
        ("t100000", FakeVariant(words=100_000)),
        ("d0-f0", FakeVariant()),
        ("d60000-f60000", FakeVariant(delay_s=60.0, first_delay_s=60.0)),
        ("f5-fail-d7-end-t3", FakeVariant(words=3, delay_s=0.007, first_delay_s=0.005, end=True, fail=True)),
        ("t007", FakeVariant(words=7)),
    ],
)
def test_parse_valid_variants(name: str, expected: FakeVariant) -> None:
    assert parse_fake_variant(name) == expected


@pytest.mark.parametrize(
    ("name", "bad_part"),
    [
        ("", "empty"),
        ("x", "'x'"),
        ("T8", "'T8'"),
        ("t", "'t'"),
        ("tx", "'tx'"),
        ("t8x", "'t8x'"),
        ("t 8", "'t 8'"),
        ("t+8", "'t+8'"),
        ("t٣", "'t٣'"),  # a non-ASCII digit
        ("t0", "'t0'"),
        ("t100001", "'t100001'"),
        ("t99999999999999999999999", "'t99999999999999999999999'"),
        ("d60001", "'d60001'"),
        ("f60001", "'f60001'"),
        ("f-1", "'f'"),
        ("t8-t9", "'t9'"),
        ("d1-d1", "'d1'"),
        ("end-end", "'end'"),
        ("fail-t2-fail", "'fail'"),
        ("t8--end", "empty token"),
        ("-t8", "empty token"),
        ("t8-", "empty token"),
        ("default-end", "'default'"),
        ("Default", "'Default'"),
    ],
)
def test_parse_invalid_variants_name_the_bad_part(name: str, bad_part: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_fake_variant(name)
    message = str(excinfo.value)
    assert bad_part in message
    assert repr(name) in message
    # The grammar is spelled out so an API user can fix the name without reading the source.
    for fragment in ("t<N>", "d<MS>", "f<MS>", "end", "fail", "default"):
        assert fragment in message


def test_out_of_range_message_gives_the_range() -> None:
    with pytest.raises(ValueError, match=r"out of range 1\.\.100000"):
        parse_fake_variant("t0")
    with pytest.raises(ValueError, match=r"repeats"):
        parse_fake_variant("t1-t2")


# --------------------------------------------------------------------------------------------------
# Generated replies and streaming
# --------------------------------------------------------------------------------------------------


async def test_stream_chunks_join_to_content_and_count_words() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(FakeVariant(words=12), stats=stats)
    messages: list[LLMMessage] = [SystemMessage(content="be brief"), UserMessage(content="hi", source="user")]
    chunks, result = await collect(client.create_stream(messages))

    assert isinstance(result.content, str)
    assert "".join(chunks) == result.content
    assert result.finish_reason == "stop"
    assert result.content.startswith("Fake reply 1 after 2 messages: ")
    generated = result.content.removeprefix("Fake reply 1 after 2 messages: ").split(" ")
    assert len(generated) == 12
    assert "TERMINATE" not in result.content
    # One word per chunk; every chunk but the last keeps its trailing space.
    assert len(chunks) == len(result.content.split())
    assert all(c.endswith(" ") and c.strip() == c[:-1] for c in chunks[:-1])
    assert chunks[-1] == generated[-1]
    assert stats.chunks == len(chunks)
    assert stats.calls == 1
    assert stats.last_message_count == 2


async def test_default_variant_has_24_words() -> None:
    result = await FakeChatCompletionClient().create(HI)
    assert isinstance(result.content, str)
    assert len(result.content.split(": ", 1)[1].split()) == 24


async def test_many_words_cycle_through_ordinary_words() -> None:
    result = await FakeChatCompletionClient(FakeVariant(words=500)).create(HI)
    assert isinstance(result.content, str)
    words = result.content.split(": ", 1)[1].split(" ")
    assert len(words) == 500
    assert all(w.isalpha() and w.islower() for w in words)
    assert words[:4] == ["the", "quick", "brown", "fox"]


async def test_end_variant_appends_terminate() -> None:
    client = FakeChatCompletionClient(parse_fake_variant("t3-end"))
    chunks, result = await collect(client.create_stream(HI))
    assert isinstance(result.content, str)
    assert result.content.endswith(" TERMINATE")
    assert len(result.content.split(": ", 1)[1].split()) == 4
    assert chunks[-1] == "TERMINATE"
    assert "".join(chunks) == result.content


async def test_replies_are_deterministic() -> None:
    messages: list[LLMMessage] = [UserMessage(content="same", source="user")] * 3
    created = [await FakeChatCompletionClient(FakeVariant(words=9)).create(messages) for _ in range(2)]
    _, streamed = await collect(FakeChatCompletionClient(FakeVariant(words=9)).create_stream(messages))
    assert created[0].content == created[1].content == streamed.content

    client = FakeChatCompletionClient(FakeVariant(words=9))
    one = await client.create(messages)
    two = await client.create(messages[:1])
    assert isinstance(one.content, str) and isinstance(two.content, str)
    assert one.content.startswith("Fake reply 1 after 3 messages: ")
    assert two.content.startswith("Fake reply 2 after 1 messages: ")
    assert one.content.split(": ", 1)[1] == two.content.split(": ", 1)[1]


async def test_create_and_stream_share_the_call_counter() -> None:
    client = FakeChatCompletionClient(FakeVariant(words=2))
    a = await client.create(HI)
    _, b = await collect(client.create_stream(HI))
    assert isinstance(a.content, str) and isinstance(b.content, str)
    assert a.content.startswith("Fake reply 1 ")
    assert b.content.startswith("Fake reply 2 ")


async def test_scripted_text_is_streamed_exactly() -> None:
    text = "  Hello,  world!\nSecond line\twith tabs "
    chunks, result = await collect(text_client(text).create_stream(HI))
    assert result.content == text
    assert "".join(chunks) == text
    assert len(chunks) == len(text.split())
    assert result.usage.completion_tokens == len(text.split())


async def test_whitespace_and_empty_scripted_text() -> None:
    chunks, result = await collect(text_client("   ").create_stream(HI))
    assert "".join(chunks) == result.content == "   "
    chunks, result = await collect(text_client("").create_stream(HI))
    assert chunks == []
    assert result.content == ""
    assert result.finish_reason == "stop"


# --------------------------------------------------------------------------------------------------
# Delays
# --------------------------------------------------------------------------------------------------


async def test_per_chunk_delay_is_applied() -> None:
    client = text_client("one two three", variant=parse_fake_variant("d20"))
    start = time.monotonic()
    chunks, _ = await collect(client.create_stream(HI))
    assert len(chunks) == 3
    assert time.monotonic() - start >= 0.035  # two waits of 20 ms, with slack for clock granularity


async def test_first_chunk_delay_is_applied() -> None:
    client = text_client("one", variant=parse_fake_variant("f50"))
    start = time.monotonic()
    await collect(client.create_stream(HI))
    assert time.monotonic() - start >= 0.045


async def test_step_delay_overrides_variant_delay() -> None:
    client = FakeChatCompletionClient(
        parse_fake_variant("d60000"), script=[ScriptStep(text="one two three", delay_ms=20)]
    )
    start = time.monotonic()
    chunks, _ = await asyncio.wait_for(collect(client.create_stream(HI)), timeout=10)
    assert chunks == ["one ", "two ", "three"]
    assert time.monotonic() - start >= 0.035


async def test_create_applies_only_the_first_chunk_delay() -> None:
    client = FakeChatCompletionClient(parse_fake_variant("t3-d60000-f30"))
    start = time.monotonic()
    # With per-chunk delays this would take minutes; the timeout only guards against that bug.
    result = await asyncio.wait_for(client.create(HI), timeout=10)
    assert time.monotonic() - start >= 0.025
    assert isinstance(result.content, str)


# --------------------------------------------------------------------------------------------------
# Scripts: text, tool calls, handoffs, errors
# --------------------------------------------------------------------------------------------------


async def test_script_steps_are_consumed_in_order_then_generated() -> None:
    client = text_client("alpha", "beta gamma", variant=FakeVariant(words=2))
    first = await client.create(HI)
    _, second = await collect(client.create_stream(HI))
    third = await client.create(HI)
    assert first.content == "alpha"
    assert second.content == "beta gamma"
    assert third.content == "Fake reply 3 after 1 messages: the quick"


async def test_scripts_are_per_client_instance() -> None:
    script = [ScriptStep(text="scripted")]
    a = FakeChatCompletionClient(script=script)
    b = FakeChatCompletionClient(script=script)
    assert (await a.create(HI)).content == "scripted"
    assert (await b.create(HI)).content == "scripted"
    assert (await a.create(HI)).content != "scripted"


async def test_tool_calls_step() -> None:
    step = ScriptStep(
        tool_calls=[
            ScriptToolCall(name="search", arguments={"query": "fox", "limit": 3}),
            ScriptToolCall(name="now"),
        ]
    )
    stats = FakeStats()
    client = FakeChatCompletionClient(script=[step, step], stats=stats)

    chunks, streamed = await collect(client.create_stream(HI))
    assert chunks == []
    assert stats.chunks == 0
    assert streamed.finish_reason == "function_calls"
    assert streamed.content == [
        FunctionCall(id="call_1_0", name="search", arguments=json.dumps({"query": "fox", "limit": 3})),
        FunctionCall(id="call_1_1", name="now", arguments="{}"),
    ]
    assert streamed.usage.completion_tokens == 20

    created = await client.create(HI)
    assert created.finish_reason == "function_calls"
    assert isinstance(created.content, list)
    assert [c.id for c in created.content] == ["call_2_0", "call_2_1"]
    assert json.loads(created.content[0].arguments) == {"query": "fox", "limit": 3}


async def test_handoff_step() -> None:
    client = FakeChatCompletionClient(script=[ScriptStep(handoff="critic")])
    chunks, result = await collect(client.create_stream(HI))
    assert chunks == []
    assert result.finish_reason == "function_calls"
    assert result.content == [FunctionCall(id="call_1_0", name="transfer_to_critic", arguments="{}")]
    assert result.usage.completion_tokens == 10


async def test_handoff_tool_name_is_lowercased_like_autogen() -> None:
    result = await FakeChatCompletionClient(script=[ScriptStep(handoff="Critic")]).create(HI)
    assert isinstance(result.content, list)
    assert result.content[0].name == "transfer_to_critic"


async def test_scripted_error_raises_and_counts_the_call() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(
        script=[ScriptStep(error="rate limited"), ScriptStep(error="boom"), ScriptStep(text="ok")],
        stats=stats,
    )
    with pytest.raises(FakeModelError, match=r"^rate limited$"):
        await client.create(HI)
    with pytest.raises(FakeModelError, match=r"^boom$"):
        await collect(client.create_stream(HI))
    assert stats.calls == 2
    assert stats.open_streams == 0
    assert (await client.create(HI)).content == "ok"


async def test_fail_variant_always_raises() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(parse_fake_variant("fail"), script=[ScriptStep(text="never")], stats=stats)
    expected = r"^fake model failure \(variant 'fail'\)$"
    with pytest.raises(FakeModelError, match=expected):
        await client.create(HI)
    with pytest.raises(FakeModelError, match=expected):
        await collect(client.create_stream(HI))
    assert stats.calls == 2
    assert stats.chunks == 0
    assert stats.open_streams == 0
    assert issubclass(FakeModelError, RuntimeError)


# --------------------------------------------------------------------------------------------------
# The fake's own script steps (the public schema that requests write is tested in tests/agents)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{}, {"delay_ms": 5}, {"text": "a", "error": "b"}, {"handoff": "b", "tool_calls": [ScriptToolCall("x")]}],
)
def test_a_script_step_needs_exactly_one_action(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of text, tool_calls, handoff, error"):
        ScriptStep(**fields)


async def test_a_step_of_the_public_schema_plays_as_the_fakes_own() -> None:
    public = PublicScriptStep.model_validate(
        {"tool_calls": [{"name": "f", "arguments": {"a": 1}}], "delay_ms": 0, "reasoning": "Hm."}
    )
    step = ScriptStep.of(public)
    assert step == ScriptStep(tool_calls=[ScriptToolCall("f", {"a": 1})], delay_ms=0, reasoning="Hm.")
    assert ScriptStep.of(PublicScriptStep(hang=True)).hang is True
    failing = ScriptStep.of(PublicScriptStep(error="slow down", error_kind="rate_limited"))
    with pytest.raises(FakeModelError, match="slow down") as raised:
        await FakeChatCompletionClient(script=[failing]).create(HI)
    assert raised.value.kind == "rate_limited" and raised.value.retryable


# --------------------------------------------------------------------------------------------------
# Selector prompts
# --------------------------------------------------------------------------------------------------

SELECTOR_PROMPT = (
    "You are in a role play game. The following roles are available:\nwriter: writes\ncritic: critiques.\n"
    "Read the following conversation. Then select the next role from ['writer', 'critic'] to play. "
    "Only return the role.\n\nuser: hi\n\n"
    "Read the above conversation. Then select the next role from ['writer', 'critic'] to play. "
    "Only return the role.\n"
)


async def test_selector_prompt_answered_with_first_candidate() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(
        parse_fake_variant("f60000-d60000"), script=[ScriptStep(text="scripted")], stats=stats
    )
    messages: list[LLMMessage] = [UserMessage(content=SELECTOR_PROMPT, source="user")]

    chunks, result = await asyncio.wait_for(collect(client.create_stream(messages)), timeout=10)
    assert chunks == ["writer"]
    assert result.content == "writer"
    assert result.finish_reason == "stop"
    created = await asyncio.wait_for(client.create([SystemMessage(content=SELECTOR_PROMPT)]), timeout=10)
    assert created.content == "writer"
    assert stats.calls == 2
    assert stats.chunks == 1


async def test_selector_prompt_does_not_consume_script_steps() -> None:
    client = FakeChatCompletionClient(script=[ScriptStep(text="scripted")])
    selection = await client.create([UserMessage(content=SELECTOR_PROMPT, source="user")])
    assert selection.content == "writer"
    assert (await client.create(HI)).content == "scripted"


async def test_selector_prompt_in_a_later_message_and_odd_brackets() -> None:
    client = FakeChatCompletionClient()
    prompt = "select the next role from ['a]b', 'c'] to play"
    messages: list[LLMMessage] = [
        UserMessage(content="hello", source="user"),
        AssistantMessage(content="sure", source="x"),
        UserMessage(content=prompt, source="user"),
    ]
    assert (await client.create(messages)).content == "a]b"


async def test_malformed_selector_prompt_gets_a_normal_reply() -> None:
    client = FakeChatCompletionClient(FakeVariant(words=1))
    for text in ("select the next role from [oops] to play", "select the next role from [] to play"):
        result = await client.create([UserMessage(content=text, source="user")])
        assert isinstance(result.content, str)
        assert result.content.startswith("Fake reply")


# --------------------------------------------------------------------------------------------------
# Cancellation and open streams
# --------------------------------------------------------------------------------------------------


async def test_cancellation_token_stops_the_stream() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(parse_fake_variant("t50-d5"), stats=stats)
    token = CancellationToken()
    stream = client.create_stream(HI, cancellation_token=token)
    received = [await anext(stream) for _ in range(3)]
    assert all(isinstance(c, str) for c in received)
    assert stats.open_streams == 1

    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await anext(stream)
    assert stats.chunks == 3
    assert stats.open_streams == 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    await asyncio.sleep(0.03)
    assert stats.chunks == 3


async def test_cancellation_token_interrupts_a_long_delay() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(parse_fake_variant("t5-d60000"), stats=stats)
    token = CancellationToken()

    async def consume() -> list[str | CreateResult]:
        return [item async for item in client.create_stream(HI, cancellation_token=token)]

    task = asyncio.create_task(consume())
    while stats.chunks < 1:
        await asyncio.sleep(0.001)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert stats.chunks == 1
    assert stats.open_streams == 0


async def test_cancelled_token_before_the_call() -> None:
    token = CancellationToken()
    token.cancel()
    client = FakeChatCompletionClient()
    with pytest.raises(asyncio.CancelledError):
        await client.create(HI, cancellation_token=token)
    with pytest.raises(asyncio.CancelledError):
        await collect(client.create_stream(HI, cancellation_token=token))
    assert client.stats.chunks == 0
    assert client.stats.open_streams == 0


async def test_task_cancellation_interrupts_sleep() -> None:
    stats = FakeStats()
    client = FakeChatCompletionClient(parse_fake_variant("t5-d60000"), stats=stats)

    async def consume() -> None:
        async for _ in client.create_stream(HI):
            pass

    task = asyncio.create_task(consume())
    while stats.chunks < 1:
        await asyncio.sleep(0.001)
    assert stats.open_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert stats.open_streams == 0
    assert stats.chunks == 1


async def test_open_streams_tracks_running_generators() -> None:
    stats = FakeStats()
    a = FakeChatCompletionClient(FakeVariant(words=3), stats=stats)
    b = FakeChatCompletionClient(FakeVariant(words=3), stats=stats)
    sa, sb = a.create_stream(HI), b.create_stream(HI)
    assert stats.open_streams == 0  # generators have not started yet
    await anext(sa)
    await anext(sb)
    assert stats.open_streams == 2
    await sa.aclose()
    assert stats.open_streams == 1
    await collect(sb)
    assert stats.open_streams == 0
    assert stats.calls == 2


# --------------------------------------------------------------------------------------------------
# Usage, token counting, model info
# --------------------------------------------------------------------------------------------------


async def test_usage_numbers() -> None:
    client = FakeChatCompletionClient(FakeVariant(words=4), script=[ScriptStep(handoff="b")])
    assert client.actual_usage() == RequestUsage(prompt_tokens=0, completion_tokens=0)
    messages: list[LLMMessage] = [SystemMessage(content="x" * 40), UserMessage(content="y" * 23, source="u")]

    await client.create(messages)
    assert client.actual_usage() == RequestUsage(prompt_tokens=15, completion_tokens=10)

    _, result = await collect(client.create_stream(messages))
    assert isinstance(result.content, str)
    words = len(result.content.split())
    assert words == 6 + 4
    assert result.usage == RequestUsage(prompt_tokens=15, completion_tokens=words)
    assert client.actual_usage() == result.usage
    assert client.total_usage() == RequestUsage(prompt_tokens=30, completion_tokens=10 + words)

    await client.create([UserMessage(content="", source="u")])
    assert client.actual_usage().prompt_tokens == 1


def test_token_counting() -> None:
    client = FakeChatCompletionClient()
    messages: list[LLMMessage] = [UserMessage(content="z" * 400, source="u")]
    assert client.count_tokens(messages) == 100
    assert client.remaining_tokens(messages) == 1_000_000 - 100
    assert client.count_tokens([]) == 1
    assert client.remaining_tokens([UserMessage(content="z" * 4_000_008, source="u")]) == 0


@pytest.mark.parametrize("function_calling", [True, False])
async def test_model_info(function_calling: bool) -> None:
    client = FakeChatCompletionClient(function_calling=function_calling)
    info = client.model_info
    assert info["vision"] is False
    assert info["function_calling"] is function_calling
    assert info["json_output"] is False
    assert info["structured_output"] is False
    assert info["family"] == ModelFamily.UNKNOWN
    await client.close()


def test_default_function_calling_is_true() -> None:
    assert FakeChatCompletionClient().model_info["function_calling"] is True


# --------------------------------------------------------------------------------------------------
# With real AutoGen teams
# --------------------------------------------------------------------------------------------------


async def test_streaming_assistant_in_round_robin_team() -> None:
    stats = FakeStats()
    agent = AssistantAgent(
        name="a",
        model_client=FakeChatCompletionClient(parse_fake_variant("t5"), stats=stats),
        model_client_stream=True,
    )
    team = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(2))

    chunks: list[ModelClientStreamingChunkEvent] = []
    messages: list[TextMessage] = []
    result: TaskResult | None = None
    async for item in team.run_stream(task="hi"):
        if isinstance(item, ModelClientStreamingChunkEvent):
            chunks.append(item)
        elif isinstance(item, TextMessage):
            messages.append(item)
        elif isinstance(item, TaskResult):
            result = item

    assert result is not None
    assert [m.source for m in messages] == ["user", "a"]
    reply = messages[1]
    assert reply.content == "".join(c.content for c in chunks)
    assert reply.content.startswith("Fake reply 1 after ")
    assert {c.full_message_id for c in chunks} == {reply.id}
    assert all(c.source == "a" for c in chunks)
    assert stats.open_streams == 0
    assert stats.chunks == len(chunks)


async def test_selector_group_chat_alternates_speakers() -> None:
    selector_stats = FakeStats()

    def make(name: str) -> AssistantAgent:
        return AssistantAgent(
            name=name,
            description=f"The {name}.",
            model_client=FakeChatCompletionClient(FakeVariant(words=3)),
        )

    team = SelectorGroupChat(
        [make("writer"), make("critic")],
        model_client=FakeChatCompletionClient(stats=selector_stats),
        termination_condition=MaxMessageTermination(4),
    )
    result = await team.run(task="write a poem")
    assert [m.source for m in result.messages] == ["user", "writer", "critic", "writer"]
    # AutoGen excludes the previous speaker by default, so with two agents only the first
    # selection has a choice to make and reaches the model.
    assert selector_stats.calls == 1


def _sources(items: Sequence[object]) -> list[str]:
    return [getattr(i, "source", "") for i in items]


async def test_selector_streaming_with_repeated_speakers_allowed() -> None:
    # With repeats allowed every selection reaches the model, which always picks the first candidate.
    selector_stats = FakeStats()
    agents: list[ChatAgent | Team] = [
        AssistantAgent(name=n, model_client=FakeChatCompletionClient(FakeVariant(words=2)), model_client_stream=True)
        for n in ("writer", "critic")
    ]
    team = SelectorGroupChat(
        agents,
        model_client=FakeChatCompletionClient(stats=selector_stats),
        termination_condition=MaxMessageTermination(3),
        allow_repeated_speaker=True,
        model_client_streaming=True,
    )
    result = await team.run(task="go")
    assert _sources(result.messages) == ["user", "writer", "writer"]
    assert selector_stats.calls == 2
    assert selector_stats.open_streams == 0


async def test_scripted_handoff_drives_a_swarm() -> None:
    first = AssistantAgent(
        name="a",
        model_client=FakeChatCompletionClient(script=[ScriptStep(handoff="b")]),
        handoffs=["b"],
        model_client_stream=True,
    )
    second = AssistantAgent(name="b", model_client=FakeChatCompletionClient(FakeVariant(words=2)))
    result = await Swarm([first, second], termination_condition=MaxMessageTermination(3)).run(task="hi")
    handoffs = [m for m in result.messages if isinstance(m, HandoffMessage)]
    assert [(m.source, m.target) for m in handoffs] == [("a", "b")]
    last = result.messages[-1]
    assert isinstance(last, TextMessage)
    assert last.source == "b"
    assert last.content.startswith("Fake reply 1 after ")


async def test_the_prompt_log_has_every_call_s_prompt_and_reply(tmp_path: Path) -> None:
    log = tmp_path / "prompts.jsonl"
    stats = FakeStats(prompt_log=log)
    client = FakeChatCompletionClient(script=[ScriptStep(text="first"), ScriptStep(error="boom")], stats=stats)
    asked = [UserMessage(content="Where to?", source="user")]
    result = await client.create(asked)
    with pytest.raises(Exception, match="boom"):
        await client.create(
            [*asked, AssistantMessage(content="first", source="a"), UserMessage(content="Paris", source="human")]
        )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"prompt": [["UserMessage", "user", "Where to?"]], "reply": result.content, "error": None}
    assert lines[1]["prompt"][-1] == ["UserMessage", "human", "Paris"] and lines[1]["error"] == "boom"


async def test_a_new_client_goes_on_from_the_agent_s_turns_in_its_context() -> None:
    """A team rebuilt mid-run (a parked run resumed) gets new clients: each goes on where the agent was."""
    script = [ScriptStep(text="one"), ScriptStep(text="two"), ScriptStep(text="three")]
    context = [UserMessage(content="go", source="user"), AssistantMessage(content="one", source="a")]
    fresh = FakeChatCompletionClient(script=script)
    assert (await fresh.create(context)).content == "two"
    assert (await fresh.create(context)).content == "three"  # then on by its own count, as before
