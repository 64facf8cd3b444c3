"""The project's own fake model server, driven by the openai SDK as a user's program would drive it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from app.dev.fake_llm import Workload
from tests.fixtures.process import fake_llm

SWARMDIRECTOR = Path(sys.executable).parent / "swarmdirector"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """``swarmdirector dev fake-llm --port 0``, as the docs tell a user to start it."""
    with fake_llm(str(SWARMDIRECTOR), "dev", "fake-llm") as url:
        yield url


def test_model_names_pick_the_workload() -> None:
    assert Workload.of("fake") == Workload(32)
    assert Workload.of("fake-t64-d20-f50") == Workload(64, 0.02, 0.05)
    assert Workload.of("fake-t8-end").reply()[-2:] == ["w7 ", "TERMINATE"]
    assert Workload.of("gpt-4o") == Workload()  # anything else answers as "fake"


async def test_streams_words_and_usage_to_the_openai_sdk(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    stream = await client.chat.completions.create(
        model="fake-t5-end",
        messages=[{"role": "user", "content": "x" * 40}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 TERMINATE"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10, 5)
    # no usage unless asked for, as OpenAI does
    plain = await client.chat.completions.create(
        model="fake-t3", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert all([c.usage is None async for c in plain])
    await client.close()


async def test_answers_whole_replies_models_and_stats(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    reply = await client.chat.completions.create(model="fake-t3", messages=[{"role": "user", "content": "a"}] * 3)
    assert reply.choices[0].message.content == "w0 w1 w2 "
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert [m.id async for m in client.models.list()] == ["fake"]
    await client.close()
    async with httpx.AsyncClient(base_url=base_url.removesuffix("/v1")) as http:
        stats = (await http.get("/stats")).json()
        assert stats["last_messages"] == 3 and stats["open_streams"] == 0 and stats["requests"] >= 1
        missing = await http.post("/v1/embeddings", json={})
        assert missing.status_code == 404 and "No route" in missing.json()["error"]["message"]
        bad = await http.post("/v1/chat/completions", content=b"[1, 2")
        assert bad.status_code == 400
