"""The lean model stream against AutoGen's stock client: equal results, equal requests, equal failures.

Every comparison runs both clients, built by the same registry, against the same loopback server:
``app/dev/fake_llm.py`` for plain text and usage, the scripted server for tool calls,
reasoning, logprobs and odd streams, ``tests/faults/provider.py`` for refusals, hangs and drops.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import FunctionTool

from app.engine.calls import CallPolicy, GuardedModelClient, ModelCall, ModelCallError, error_code, is_retryable
from app.engine.chunks import EstimatedUsage, Reasoning
from app.engine.openai_stream import LeanOpenAIChatCompletionClient
from app.engine.providers import ModelRegistry
from app.engine.tools import calculator, current_time
from tests.conftest import make_settings
from tests.engine.scripted_provider import SCENARIOS, ScriptedProvider
from tests.faults.provider import FaultyProvider

HELLO: list[LLMMessage] = [UserMessage(content="hello there", source="user")]
TOOLS = [
    FunctionTool(calculator, description="Evaluate an arithmetic expression."),
    FunctionTool(current_time, description="Get the current UTC date and time."),
]
# a conversation with everything the request conversion handles: system, names, tool calls and results
CONVERSATION: list[LLMMessage] = [
    SystemMessage(content="You are terse."),
    UserMessage(content="What is 2+2?", source="user"),
    AssistantMessage(
        content=[FunctionCall(id="call_1", arguments='{"expression": "2+2"}', name="calculator")],
        source="solver",
        thought="I will compute it.",
    ),
    FunctionExecutionResultMessage(
        content=[FunctionExecutionResult(content="4", name="calculator", call_id="call_1", is_error=False)]
    ),
    AssistantMessage(content="It is 4.", source="solver"),
    UserMessage(content="And the time?", source="bob"),
]
KEY = "sk-proj-equivalence0123456789"
# the SDK marks a request whose raw response the caller reads (the stock client reads its stream so)
PER_REQUEST_HEADERS = {
    "x-stainless-retry-count",
    "x-stainless-read-timeout",
    "content-length",
    "x-stainless-raw-response",
}

Items = list[str | CreateResult]


def registry(tmp_path: Path, **settings: Any) -> ModelRegistry:
    return ModelRegistry(make_settings(tmp_path, **settings))


def pair(
    models: ModelRegistry, model: str, *, streaming: bool = True
) -> tuple[ChatCompletionClient, ChatCompletionClient]:
    ref = models.parse(model)
    stock, lean = models.build(ref, streaming=streaming), models.build(ref, streaming=streaming, lean=True)
    assert isinstance(lean, LeanOpenAIChatCompletionClient) and not isinstance(stock, LeanOpenAIChatCompletionClient)
    return stock, lean


async def stream(
    client: ChatCompletionClient, messages: Sequence[LLMMessage] = HELLO, **kwargs: Any
) -> tuple[Items, list[str]]:
    """What a create_stream yields, and the warnings it raised on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items: Items = [item async for item in client.create_stream(messages, **kwargs)]
    return items, [f"{w.category.__name__}: {w.message}" for w in caught]


async def failure(client: ChatCompletionClient, messages: Sequence[LLMMessage] = HELLO, **kwargs: Any) -> Exception:
    with pytest.raises(Exception) as caught:
        await stream(client, messages, **kwargs)
    assert isinstance(caught.value, Exception)
    return caught.value


# -- results -------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["usage asked", "no usage"])
async def test_plain_text_and_usage_equal_autogens(tmp_path: Path, fake_llm_url: str, streaming: bool) -> None:
    models = registry(tmp_path, openai_compatible_base_url=fake_llm_url)
    stock, lean = pair(models, "openai_compatible/fake-t64", streaming=streaming)
    expected, lean_items = (await stream(stock))[0], (await stream(lean))[0]
    assert lean_items == expected
    result = lean_items[-1]
    assert isinstance(result, CreateResult) and result.content == "".join(f"w{i} " for i in range(64))
    if streaming:
        assert result.usage.completion_tokens == 64 and not isinstance(result.usage, EstimatedUsage)
    else:
        # no usage reported: counted here and marked so (issue 20), never a silent 0
        assert isinstance(result.usage, EstimatedUsage) and result.usage.completion_tokens >= 64
    assert lean.total_usage() == stock.total_usage() and lean.actual_usage() == stock.actual_usage()
    await models.aclose()


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"error-event", "function-call"}))
async def test_every_scripted_stream_gives_autogens_result(
    tmp_path: Path, scripted: ScriptedProvider, scenario: str
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    stock, lean = pair(models, f"openai_compatible/{scenario}")
    expected, lean_outcome = await stream(stock, tools=TOOLS), await stream(lean, tools=TOOLS)
    assert lean_outcome == expected
    await models.aclose()


async def test_tool_calls_single_and_parallel(tmp_path: Path, scripted: ScriptedProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    _, lean = pair(models, "openai_compatible/tool")
    one = (await stream(lean, tools=TOOLS))[0]
    assert len(one) == 1 and isinstance(one[0], CreateResult), "a tool call streams no text"
    assert one[0].content == [FunctionCall(id="call_1", arguments='{"expression": "2+2"}', name="calculator")]
    assert one[0].finish_reason == "function_calls" and one[0].thought is None
    assert (one[0].usage.prompt_tokens, one[0].usage.completion_tokens) == (11, 7)
    _, lean = pair(models, "openai_compatible/parallel")
    both = (await stream(lean, tools=TOOLS))[0][-1]
    assert isinstance(both, CreateResult) and both.content == [
        FunctionCall(id="call_a", arguments='{"expression": "1+1"}', name="calculator"),
        FunctionCall(id="call_b", arguments="{}", name="current_time"),
    ]
    _, lean = pair(models, "openai_compatible/thought-tool")
    items = (await stream(lean, tools=TOOLS))[0]
    assert items[:-1] == ["Let me ", "compute."]
    assert isinstance(items[-1], CreateResult) and items[-1].thought == "Let me compute."
    await models.aclose()


async def test_reasoning_becomes_the_thought(tmp_path: Path, scripted: ScriptedProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    _, lean = pair(models, "openai_compatible/reasoning")
    items = (await stream(lean))[0]
    # reasoning streams apart from the answer (issue 20), as Reasoning pieces, with no tags added
    assert items[:-1] == ["Think", "ing...", "Answer", "!"]
    assert [type(i) for i in items[:-1]] == [Reasoning, Reasoning, str, str]
    assert isinstance(items[-1], CreateResult) and items[-1].content == "Answer!" and items[-1].thought == "Thinking..."
    await models.aclose()


async def test_a_stream_that_ends_in_an_error_fails_alike(tmp_path: Path, scripted: ScriptedProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    stock, lean = pair(models, "openai_compatible/error-event")
    expected, got = await failure(stock), await failure(lean)
    assert (type(got), str(got)) == (type(expected), str(expected))
    assert error_code(got) == error_code(expected) == "model_error" and "overloaded" in str(got)
    await models.aclose()


async def test_a_legacy_function_call_finish_is_read_not_refused(tmp_path: Path, scripted: ScriptedProvider) -> None:
    # AutoGen's loop raised "Function calls are not supported in this context" at this finish reason
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    stock, lean = pair(models, "openai_compatible/function-call")
    expected, got = await stream(stock), await stream(lean)
    assert got == expected
    result = got[0][-1]
    assert isinstance(result, CreateResult) and result.content == "x" and result.finish_reason == "function_calls"
    await models.aclose()


# -- requests ------------------------------------------------------------------------------------


def same_request(scripted: ScriptedProvider) -> dict[str, Any]:
    """The last two requests (stock's, then lean's) are the same request; the lean one, for more checks."""
    stock, lean = scripted.requests[-2:]
    assert (lean.method, lean.path, lean.query, lean.body) == (stock.method, stock.path, stock.query, stock.body)

    def kept(headers: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k not in PER_REQUEST_HEADERS}

    assert kept(lean.headers) == kept(stock.headers)
    return {"path": lean.path, "query": lean.query, "headers": lean.headers, "body": lean.body}


@pytest.mark.parametrize(
    ("call", "check"),
    [
        ({}, lambda b: "tools" not in b and "tool_choice" not in b),
        ({"tools": TOOLS}, lambda b: [t["function"]["name"] for t in b["tools"]] == ["calculator", "current_time"]),
        ({"tools": TOOLS, "tool_choice": "required"}, lambda b: b["tool_choice"] == "required"),
        ({"tools": TOOLS, "tool_choice": TOOLS[1]}, lambda b: b["tool_choice"]["function"]["name"] == "current_time"),
        (
            {"tools": TOOLS, "extra_create_args": {"parallel_tool_calls": False, "temperature": 0.25, "seed": 7}},
            lambda b: (b["parallel_tool_calls"], b["temperature"], b["seed"]) == (False, 0.25, 7),
        ),
        ({"extra_create_args": {"extra_body": {"top_k": 3}, "timeout": 30}}, lambda b: b["top_k"] == 3),
    ],
    ids=["plain", "tools", "required", "one tool", "model params", "extra body"],
)
async def test_the_request_is_autogens(tmp_path: Path, scripted: ScriptedProvider, call: Any, check: Any) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    for client in pair(models, "openai_compatible/text"):
        await stream(client, CONVERSATION, **call)
    request = same_request(scripted)
    body = request["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert body["messages"][2]["tool_calls"][0]["id"] == "call_1" and body["messages"][3]["tool_call_id"] == "call_1"
    assert request["headers"]["authorization"] == "Bearer not-needed" and request["path"] == "/v1/chat/completions"
    assert check(body)
    await models.aclose()


async def test_model_options_and_the_openai_provider(tmp_path: Path, scripted: ScriptedProvider) -> None:
    from app.agents.schemas import ModelOptions

    models = registry(tmp_path, openai_api_key="sk-test-key", openai_base_url=scripted.base_url)
    ref = models.parse("openai/text")
    options = ModelOptions(temperature=0.5, max_tokens=99)
    for lean in (False, True):
        await stream(models.build(ref, options, streaming=True, lean=lean))
    request = same_request(scripted)
    assert request["headers"]["authorization"] == "Bearer sk-test-key"
    assert (request["body"]["temperature"], request["body"]["max_tokens"]) == (0.5, 99)
    await models.aclose()


async def test_azure_deployment_url_version_and_key(tmp_path: Path, scripted: ScriptedProvider) -> None:
    models = registry(
        tmp_path,
        azure_openai_api_key="azure-secret",
        azure_openai_endpoint=scripted.origin,
        azure_openai_api_version="2024-10-21",
    )
    stock, lean = pair(models, "azure_openai/text")
    assert (await stream(lean))[0] == (await stream(stock))[0]
    request = same_request(scripted)
    assert request["path"] == "/openai/deployments/text/chat/completions"
    assert request["query"] == {"api-version": "2024-10-21"}
    assert request["headers"]["api-key"] == "azure-secret" and "authorization" not in request["headers"]
    await models.aclose()


async def test_structured_output_and_refused_arguments_stay_autogens(
    tmp_path: Path, scripted: ScriptedProvider
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    stock, lean = pair(models, "openai_compatible/text")
    for kwargs in ({"json_output": True}, {"extra_create_args": {"not_a_param": 1}}, {"tool_choice": TOOLS[0]}):
        expected, got = await failure(stock, **kwargs), await failure(lean, **kwargs)
        assert (type(got), str(got)) == (type(expected), str(expected)) and isinstance(got, ValueError)
    assert scripted.requests == []
    await models.aclose()


# -- failures ------------------------------------------------------------------------------------


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyProvider]:
    async with FaultyProvider(echo_credentials=True).running() as provider:
        yield provider


@pytest.mark.parametrize(
    ("fault", "code"), [("err429", "rate_limited"), ("err500", "model_error"), ("err400", "model_error")]
)
async def test_a_refused_request_raises_the_sdks_error(
    tmp_path: Path, faulty: FaultyProvider, fault: str, code: str
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=faulty.base_url)
    stock, lean = pair(models, f"openai_compatible/{fault}")
    expected, got = await failure(stock), await failure(lean)
    assert isinstance(got, openai.APIStatusError) and isinstance(expected, openai.APIStatusError)
    assert (type(got), got.message, got.status_code, got.body) == (
        type(expected),
        expected.message,
        expected.status_code,
        expected.body,
    )
    assert error_code(got) == code and is_retryable(got) == is_retryable(expected)
    await models.aclose()


async def test_a_dropped_stream_and_a_refused_connection_fail_alike(tmp_path: Path, faulty: FaultyProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=faulty.base_url)
    stock, lean = pair(models, "openai_compatible/drop")
    expected, got = await failure(stock), await failure(lean)
    # retried when it breaks before the first token (GuardedModelClient retries only then)
    assert type(got) is type(expected) and error_code(got) == "model_error" and is_retryable(got)
    closed = registry(tmp_path, openai_compatible_base_url="http://127.0.0.1:9/v1")
    stock, lean = pair(closed, "openai_compatible/ok")
    expected, got = await failure(stock), await failure(lean)
    assert type(got) is type(expected) is openai.APIConnectionError and is_retryable(got)
    await models.aclose()
    await closed.aclose()


def guard(inner: ChatCompletionClient, calls: list[ModelCall], *, timeout: float = 5, retries: int = 2) -> Any:
    policy = CallPolicy(timeout_s=timeout, max_retries=retries, backoff_s=0.001, backoff_max_s=0.01)
    return GuardedModelClient(inner, policy, agent="a", model="m", observer=calls.append)


def record(call: ModelCall) -> tuple[Any, ...]:
    return (call.attempts, call.error_code, call.prompt_tokens, call.completion_tokens, call.ttft_ms is not None)


@pytest.mark.parametrize(
    ("fault", "code", "attempts"),
    [
        ("hang", "model_timeout", 2),
        ("stall", "model_timeout", 1),
        ("err429", "rate_limited", 2),
        ("drop", "model_error", 1),
    ],
)
async def test_guarded_failures_classify_and_retry_as_before(
    tmp_path: Path, faulty: FaultyProvider, fault: str, code: str, attempts: int
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=faulty.base_url, openai_compatible_api_key=KEY)
    outcomes = []
    for client in pair(models, f"openai_compatible/{fault}"):
        calls: list[ModelCall] = []
        seen: list[str | CreateResult] = []
        with pytest.raises(ModelCallError) as caught:
            async for item in guard(client, calls, timeout=0.3, retries=1).create_stream(HELLO):
                seen.append(item)
        assert KEY not in caught.value.message, "the key the provider echoed is scrubbed"
        outcomes.append((caught.value.code, caught.value.message, seen, [record(c) for c in calls]))
    assert outcomes[1] == outcomes[0]
    assert outcomes[1][0] == code and outcomes[1][3][0][0] == attempts
    await models.aclose()


async def test_a_rate_limit_before_the_first_token_is_retried_then_answered(
    tmp_path: Path, scripted: ScriptedProvider
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    outcomes = []
    for name in ("flaky2-text", "flaky2-tool"):
        ref = models.parse(f"openai_compatible/{name}")
        for lean in (False, True):
            scripted._served.clear()  # each client meets the same two refusals
            calls: list[ModelCall] = []
            client = guard(models.build(ref, streaming=True, lean=lean), calls)
            items = [item async for item in client.create_stream(HELLO, tools=TOOLS)]
            outcomes.append((items, [record(c) for c in calls]))
    assert outcomes[1] == outcomes[0] and outcomes[3] == outcomes[2]
    assert outcomes[1][1] == [(3, None, 11, 7, True)]
    await models.aclose()


async def test_the_sink_path_over_the_lean_stream(tmp_path: Path, fake_llm_url: str) -> None:
    models = registry(tmp_path, openai_compatible_base_url=fake_llm_url)
    stock, lean = pair(models, "openai_compatible/fake-t8")
    chunks: list[tuple[str, str]] = []
    calls: list[ModelCall] = []
    client = GuardedModelClient(
        lean,
        CallPolicy(5, 0, 0.01),
        agent="a",
        model="m",
        observer=calls.append,
        sink=lambda m, t: chunks.append((m, t)),
    )
    result = await client.create(HELLO)
    assert result == (await stream(stock))[0][-1]
    assert "".join(t for _, t in chunks) == result.content and len(chunks) == 8
    assert len({m for m, _ in chunks}) == 1
    assert [record(c) for c in calls] == [(1, None, result.usage.prompt_tokens, 8, True)]
    await models.aclose()


# -- cancellation --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["hang", "stall"])
async def test_the_cancellation_token_stops_a_waiting_stream(
    tmp_path: Path, faulty: FaultyProvider, fault: str
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=faulty.base_url)
    for client in pair(models, f"openai_compatible/{fault}"):
        token = CancellationToken()
        if fault == "hang":
            asyncio.get_running_loop().call_later(0.1, token.cancel)  # no chunk ever comes
        started = time.monotonic()
        seen: list[str | CreateResult] = []
        with pytest.raises(asyncio.CancelledError):
            async for item in client.create_stream(HELLO, cancellation_token=token):
                seen.append(item)
                if len(seen) == 2:
                    # the provider stalls after its second chunk: cancel while the stream waits for a third
                    asyncio.get_running_loop().call_later(0.1, token.cancel)
        assert time.monotonic() - started < 2
        assert seen == ([] if fault == "hang" else ["one ", "two "])
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0, "only the call was cancelled, not the task"
        # a cancelled token stops the next call before it is sent
        before = faulty.requests
        with pytest.raises(asyncio.CancelledError):
            await stream(client, cancellation_token=token)
        assert faulty.requests == before
    await models.aclose()


async def test_a_lean_client_shares_the_providers_sdk_client_and_transport(
    tmp_path: Path, scripted: ScriptedProvider
) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    ref = models.parse("openai_compatible/text")
    first, second = models.build(ref, streaming=True, lean=True), models.build(ref, lean=True)
    assert isinstance(first, LeanOpenAIChatCompletionClient) and isinstance(second, LeanOpenAIChatCompletionClient)
    assert first._client is second._client and first._transport is second._transport is models.stream_transport
    assert not isinstance(models.build(ref), LeanOpenAIChatCompletionClient)
    for client in (first, second, first):
        await stream(client)
    # every stream was read to its end, so its connection went back to the pool for the next call
    assert scripted.connections == 1
    session = models.stream_transport.session()
    await first.close()  # a model client never closes what the registry shares
    assert not session.closed
    await models.aclose()
    assert session.closed and models.stream_transport.closed


async def test_a_providers_cookie_is_never_sent_back(tmp_path: Path, scripted: ScriptedProvider) -> None:
    """One session serves every principal's runs: what a provider sets during one is not sent with the next."""
    # by name: cookie jars take no cookie from an IP address
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url.replace("127.0.0.1", "localhost"))
    ref = models.parse("openai_compatible/cookie-text")
    for _ in range(2):
        assert (await stream(models.build(ref, streaming=True, lean=True)))[0][:4] == ["Hello", ", ", "world", "."]
    assert [r.headers.get("cookie") for r in scripted.requests] == [None, None]
    await models.aclose()


async def test_a_gzipped_refusal_is_read_as_the_sdk_reads_it(tmp_path: Path, scripted: ScriptedProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=scripted.base_url)
    stock, lean = pair(models, "openai_compatible/gzip429")
    expected, got = await failure(stock), await failure(lean)
    assert isinstance(got, openai.RateLimitError) and isinstance(expected, openai.RateLimitError)
    assert (got.message, got.body) == (expected.message, expected.body)
    assert got.body == {"message": "slow down", "type": "rate_limit"}
    await models.aclose()


async def test_the_sdks_timeouts_apply_to_the_lean_stream(tmp_path: Path, faulty: FaultyProvider) -> None:
    models = registry(tmp_path, openai_compatible_base_url=faulty.base_url)
    _, lean = pair(models, "openai_compatible/m")
    assert isinstance(lean, LeanOpenAIChatCompletionClient)
    params = lean._process_create_args(HELLO, [], "auto", None, {})
    sdk = httpx.Timeout(lean._client.timeout)
    _, timeout = lean._request(params)
    assert (timeout.sock_read, timeout.sock_connect, timeout.connect, timeout.total) == (
        sdk.read,
        sdk.connect,
        sdk.pool,
        None,
    )
    # a call's own timeout, unguarded: no headers in time, then a stream that stops, fail alike
    for fault, kind in (("hang", openai.APITimeoutError), ("stall", httpx.ReadTimeout)):
        stock, lean = pair(models, f"openai_compatible/{fault}")
        started = time.monotonic()
        expected = await failure(stock, extra_create_args={"timeout": 0.3})
        got = await failure(lean, extra_create_args={"timeout": 0.3})
        assert type(got) is type(expected) is kind and time.monotonic() - started < 5
        assert error_code(got) == error_code(expected) and is_retryable(got) == is_retryable(expected)
    await models.aclose()
