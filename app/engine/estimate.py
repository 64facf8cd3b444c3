"""Token counts for a model call whose provider reported none (llama-cpp-python ignores
``stream_options.include_usage``; some gateways drop the usage chunk).

A call without usage would otherwise count 0 tokens everywhere (its messages, its run,
analytics, the CLI) and ``token_budget`` would never fire. Here the request's messages and tools
and the answer are counted with OpenAI's ``o200k_base`` encoding, from ``bpe-openai``, whose wheel
carries the encodings (tiktoken, which AutoGen's ``count_tokens`` uses, downloads them on first
use, and a server may have no way out). Another model's tokenizer counts differently, so the
result is an estimate, and says so: ``EstimatedUsage``, ``usage.estimated`` in events and
records. The prompt is counted as OpenAI counts chat messages: each message's text and name plus
3 tokens, plus 3 for the reply's priming.
"""

from __future__ import annotations

import asyncio
import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from app.engine.chunks import ChunkAssembler, EstimatedUsage

ENCODING = "o200k_base"
PER_MESSAGE = 3
REPLY_PRIMING = 3


@functools.cache
def _encoding() -> Any:
    with warnings.catch_warnings():
        # bpe-openai 0.1.4 reads its data (on import, too) with importlib.resources.open_binary,
        # deprecated since Python 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai  # about 0.1 s to import and load the encoding: once per process, in a thread

        return bpe_openai.get_encoding(ENCODING)


async def encoding() -> Any:
    """The encoding, loaded off the event loop the first time."""
    if _encoding.cache_info().currsize:
        return _encoding()
    return await asyncio.to_thread(_encoding)


def _texts(value: Any) -> Iterable[str]:
    """Every string in a message's content (text parts of a list, not image data)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key not in ("image_url", "input_audio", "type"):
                yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


def count(enc: Any, text: str) -> int:
    return len(enc.encode(text)) if text else 0


def prompt_tokens(enc: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += PER_MESSAGE + sum(count(enc, t) for t in _texts(message.get("content")))
        total += sum(count(enc, t) for t in _texts(message.get("tool_calls")))
        if message.get("name"):
            total += 1 + count(enc, str(message["name"]))
    if tools:
        total += count(enc, orjson.dumps(list(tools)).decode())
    return total


def completion_tokens(enc: Any, answer: ChunkAssembler) -> int:
    text = "".join(answer.content) + "".join(answer.reasoning)
    calls = "".join(c.name + c.arguments for c in answer.calls.values())
    return max(1, count(enc, text) + count(enc, calls))


async def estimate(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Any], answer: ChunkAssembler
) -> EstimatedUsage:
    enc = await encoding()
    return EstimatedUsage(prompt_tokens(enc, messages, tools), completion_tokens(enc, answer))
