"""Every recorded provider answer, through both model clients: one expected result per transcript.

``transcripts/`` holds real providers' answers byte for byte (each named after its source; see its
README). Each is replayed over loopback, cut at seeded random places and at the hard ones, through
the two ways the server calls a model:

- ``lean``: the lean client on the fast token path, as a run uses it by default (``create`` with a
  sink: text and reasoning pieces go to the sink);
- ``stock``: AutoGen's stock client streaming through AutoGen's own path (``SWARM_FAST_TOKENS=false``:
  ``create_stream``, whose text pieces AutoGen routes).

Both are wrapped in ``GuardedModelClient`` (no retries), which classifies failures, so an error
transcript is checked by its stable code and a readable message. One difference is by design: the
stock path streams no reasoning pieces (AutoGen would join them into the answer's text); it gets
the reasoning whole, as the result's thought, which is checked instead.

The same bytes are also fed straight to the SSE decoder and the assembler, cut at more seeds, so
the hard cuts are certain to be met whatever TCP does with the pieces.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage, UserMessage

from app.engine.calls import CallPolicy, GuardedModelClient, ModelCall, ModelCallError
from app.engine.chunks import ChunkAssembler, EstimatedUsage, ModelStreamError, Reasoning
from app.engine.openai_stream import stream_error_event
from app.engine.providers import ModelRegistry
from app.engine.sse import SSEDecoder
from tests.conftest import make_settings
from tests.providers.replay import ReplayServer, Transcript, pieces, transcripts

ALL = sorted(transcripts())
TAG = re.compile(r"<[a-zA-Z!/][^>]*>")
MESSAGE_MAX = 500


def test_the_suite_covers_the_providers_and_the_cases() -> None:
    providers = {stem.split("__")[0] for stem in ALL}
    for name in ("openai", "azure", "gemini", "ollama", "vllm", "llamacpp", "lmstudio", "openrouter", "litellm"):
        assert name in providers, name
    assert "deepseek" in providers
    assert len(ALL) >= 40
    assert sum(t.fails for t in transcripts().values()) >= 12
    assert all(t.source.strip() for t in transcripts().values()), "every transcript names its source"


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer(seed=7).running() as server:
        yield server


def guarded(models: ModelRegistry, stem: str, *, lean: bool, calls: list[ModelCall], sink: Any = None) -> Any:
    ref = models.parse(f"openai_compatible/{stem}")
    inner = models.build(ref, streaming=True, lean=lean)
    policy = CallPolicy(timeout_s=10, max_retries=0, backoff_s=0)
    return GuardedModelClient(inner, policy, agent="a", model=str(ref), observer=calls.append, sink=sink)


def tool_schemas(t: Transcript) -> list[Any]:
    return [{"name": n, "description": n, "parameters": {"type": "object", "properties": {}}} for n in t.tools]


async def call(t: Transcript, url: str, tmp_path: Path, *, lean: bool) -> tuple[list[str], list[str], Any, ModelCall]:
    """The transcript through one client: its text pieces, reasoning pieces, result (or error), record."""
    models = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url=url))
    calls: list[ModelCall] = []
    texts: list[str] = []
    reasoning: list[str] = []
    messages = [UserMessage(content="What is the weather in Paris?", source="user")]
    try:
        if lean:

            def sink(_message_id: str, piece: str) -> None:
                (reasoning if type(piece) is Reasoning else texts).append(piece)

            client = guarded(models, t.stem, lean=True, calls=calls, sink=sink)
            outcome: Any = await client.create(messages, tools=tool_schemas(t))
        else:
            client = guarded(models, t.stem, lean=False, calls=calls)
            outcome = None
            async for item in client.create_stream(messages, tools=tool_schemas(t)):
                if isinstance(item, CreateResult):
                    outcome = item
                else:
                    assert type(item) is str, "AutoGen's path is given the answer's text only"
                    texts.append(item)
    except ModelCallError as exc:
        outcome = exc
    finally:
        await models.aclose()
    assert len(calls) == 1, "every call is recorded once"
    return texts, reasoning, outcome, calls[0]


def check_error(t: Transcript, outcome: Any, record: ModelCall) -> None:
    expected = t.expected["error"]
    assert isinstance(outcome, ModelCallError), f"{t.stem} must fail, got {outcome!r}"
    assert outcome.code == expected["code"], (t.stem, outcome.message)
    assert (record.error_code, record.error_message) == (outcome.code, outcome.message)
    message = outcome.message
    for part in expected["message_contains"]:
        assert part in message, (t.stem, message)
    assert 0 < len(message) <= MESSAGE_MAX, message
    assert not TAG.search(message), f"markup in the error: {message}"
    assert "\n" not in message


def check_answer(t: Transcript, texts: list[str], reasoning: list[str], result: Any, *, lean: bool) -> None:
    expected = t.expected
    assert isinstance(result, CreateResult), f"{t.stem} must answer, got {result!r}"
    calls = (
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.content if isinstance(c, FunctionCall)]
        if isinstance(result.content, list)
        else []
    )
    assert calls == expected["tool_calls"], t.stem
    if t.streams:
        assert "".join(texts) == expected["text"], t.stem
    if calls:
        assert result.thought == (expected["text"] or None)
    else:
        assert result.content == expected["text"]
        assert result.thought == (expected["reasoning"] or None)
    if lean and t.streams:
        assert "".join(reasoning) == expected["reasoning"], t.stem
    assert result.finish_reason == expected["finish_reason"], t.stem
    if expected["usage"] is None:
        assert isinstance(result.usage, EstimatedUsage), "no usage reported: it is estimated, and says so"
        assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    else:
        assert not isinstance(result.usage, EstimatedUsage)
        assert result.usage == RequestUsage(expected["usage"]["prompt_tokens"], expected["usage"]["completion_tokens"])


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
@pytest.mark.parametrize("stem", ALL)
async def test_a_transcript_through_a_client(stem: str, lean: bool, replay: ReplayServer, tmp_path: Path) -> None:
    t = transcripts()[stem]
    texts, reasoning, outcome, record = await call(t, replay.base_url, tmp_path, lean=lean)
    if t.fails:
        check_error(t, outcome, record)
    else:
        check_answer(t, texts, reasoning, outcome, lean=lean)
        assert record.error_code is None
        assert (record.prompt_tokens, record.completion_tokens) == (
            outcome.usage.prompt_tokens,
            outcome.usage.completion_tokens,
        )
        assert record.usage_estimated == (t.expected["usage"] is None)


def read(body: bytes, seed: int) -> tuple[list[str], list[str], ChunkAssembler]:
    """The bytes cut at ``seed``'s places, through the decoder and the assembler alone."""
    decoder, answer = SSEDecoder(), ChunkAssembler()
    texts: list[str] = []
    reasoning: list[str] = []
    for piece in pieces(body, seed):
        for data in decoder.feed(piece):
            for out in answer.feed(data):
                (reasoning if type(out) is Reasoning else texts).append(out)
        if decoder.error is not None:
            raise stream_error_event(decoder.error)
    for out in answer.finish():
        (reasoning if type(out) is Reasoning else texts).append(out)
    return texts, reasoning, answer


STREAMED = [stem for stem in ALL if transcripts()[stem].streams]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("stem", STREAMED)
def test_a_stream_cut_anywhere_reads_the_same(stem: str, seed: int) -> None:
    t = transcripts()[stem]
    try:
        texts, reasoning, answer = read(t.body, seed)
    except ModelStreamError as exc:
        assert t.fails, f"{stem}: {exc.message}"
        assert exc.code == t.expected["error"]["code"]
        return
    assert not t.fails, f"{stem} must fail"
    assert "".join(texts) == t.expected["text"]
    assert "".join(reasoning) == t.expected["reasoning"]
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.calls.values()]
    assert calls == t.expected["tool_calls"]


WHOLE = [s for s in ALL if transcripts()[s].status == 200 and "json" in transcripts()[s].headers["content-type"]]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
@pytest.mark.parametrize("stem", WHOLE)
async def test_a_whole_answer_through_create(stem: str, lean: bool, replay: ReplayServer, tmp_path: Path) -> None:
    """A non-streamed call (a selector's, an agent that does not stream), read by the same rules:
    a reply with both ``tool_calls`` and ``function_call`` is its tool calls (AutoGen refused it)."""
    t = transcripts()[stem]
    models = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url=replay.base_url))
    calls: list[ModelCall] = []
    client = guarded(models, stem, lean=lean, calls=calls)
    outcome: Any
    try:
        outcome = await client.create([UserMessage(content="Weather?", source="user")], tools=tool_schemas(t))
    except ModelCallError as exc:
        outcome = exc
    finally:
        await models.aclose()
    assert replay.requests[-1]["stream"] is False
    if t.fails:
        check_error(t, outcome, calls[0])
    else:
        check_answer(t, [], [], outcome, lean=lean)
