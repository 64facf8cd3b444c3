"""The guarded model client: retries before the first token, timeouts, and call records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage

from app.engine.calls import CallPolicy, GuardedModelClient, ModelCall, ModelCallError
from app.engine.fake import FakeChatCompletionClient, ScriptStep, parse_fake_variant

MESSAGES = [UserMessage(content="hello there", source="user")]


def guarded(
    script: list[dict[str, Any]], variant: str = "t3", *, timeout: float = 5, retries: int = 2
) -> tuple[GuardedModelClient, list[ModelCall], FakeChatCompletionClient]:
    calls: list[ModelCall] = []
    inner = FakeChatCompletionClient(parse_fake_variant(variant), script=[ScriptStep(**s) for s in script])
    policy = CallPolicy(timeout_s=timeout, max_retries=retries, backoff_s=0.001, backoff_max_s=0.01)
    return GuardedModelClient(inner, policy, agent="a", model=f"fake/{variant}", observer=calls.append), calls, inner


async def collect(client: GuardedModelClient) -> list[str | CreateResult]:
    return [item async for item in client.create_stream(MESSAGES)]


async def test_transient_failures_are_retried_until_an_answer() -> None:
    client, calls, inner = guarded(
        [
            {"error": "busy", "error_kind": "transient"},
            {"error": "slow down", "error_kind": "rate_limited"},
            {"text": "ok then"},
        ]
    )
    items = await collect(client)
    assert items[:-1] == ["ok ", "then"]
    assert isinstance(items[-1], CreateResult) and items[-1].content == "ok then"
    assert inner.stats.calls == 3
    assert len(calls) == 1
    assert calls[0].attempts == 3 and calls[0].error_code is None
    assert calls[0].completion_tokens == 2 and calls[0].ttft_ms is not None


async def test_retries_run_out_with_a_stable_code() -> None:
    client, calls, inner = guarded([{"error": "slow down", "error_kind": "rate_limited"}] * 5, retries=2)
    with pytest.raises(ModelCallError) as caught:
        await client.create(MESSAGES)
    assert caught.value.code == "rate_limited"
    assert inner.stats.calls == 3
    assert calls[-1].error_code == "rate_limited" and calls[-1].attempts == 3


async def test_a_plain_model_error_is_not_retried() -> None:
    client, calls, inner = guarded([{"error": "bad request"}, {"text": "never"}])
    with pytest.raises(ModelCallError) as caught:
        await collect(client)
    assert caught.value.code == "model_error" and "bad request" in caught.value.message
    assert inner.stats.calls == 1
    assert [(c.error_code, c.attempts) for c in calls] == [("model_error", 1)]


async def test_a_hanging_model_times_out_after_its_retries() -> None:
    client, calls, inner = guarded([{"hang": True}] * 3, timeout=0.05, retries=1)
    with pytest.raises(ModelCallError) as caught:
        await collect(client)
    assert caught.value.code == "model_timeout"
    assert "0.05" in caught.value.message
    assert inner.stats.calls == 2
    assert inner.stats.open_streams == 0
    assert [(c.error_code, c.attempts, c.ttft_ms) for c in calls] == [("model_timeout", 2, None)]


async def test_a_stream_that_stalls_after_its_first_token_fails_without_a_retry() -> None:
    client, calls, inner = guarded([], variant="t5-d500", timeout=0.05)
    seen: list[str | CreateResult] = []
    with pytest.raises(ModelCallError) as caught:
        async for item in client.create_stream(MESSAGES):
            seen.append(item)
    assert caught.value.code == "model_timeout"
    assert len(seen) == 1  # text already out cannot be taken back, so no retry
    assert inner.stats.calls == 1
    assert calls[-1].error_code == "model_timeout" and calls[-1].ttft_ms is not None
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0, "the stall timeout leaves the task as it was"


async def test_a_slow_but_steady_stream_is_not_a_stall() -> None:
    # every gap (20 ms) is well under the timeout (400 ms), the whole answer (800 ms) is not
    client, calls, _ = guarded([], variant="t40-d20", timeout=0.4)
    items = await collect(client)
    assert isinstance(items[-1], CreateResult) and len(items) > 5
    assert calls[-1].error_code is None


async def test_a_slow_consumer_is_not_a_stalled_stream() -> None:
    client, calls, _ = guarded([], variant="t3", timeout=0.1)
    async for _ in client.create_stream(MESSAGES):
        await asyncio.sleep(0.2)  # the time between two reads is the consumer's, not the model's
    assert calls[-1].error_code is None


async def test_cancellation_is_recorded_not_as_a_failure_and_is_not_retried() -> None:
    client, calls, inner = guarded([{"hang": True}], timeout=10)
    task = asyncio.ensure_future(collect(client))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.stats.calls == 1
    # the call is in the records (issue 20: a cancelled call was missing), marked cancelled, not failed
    assert [(c.error_code, c.attempts) for c in calls] == [("cancelled", 1)]
