"""The real OpenAI client path (as used for Ollama, vLLM, llama.cpp) against a loopback fake server.

Uses the project's fake model server, ``app/dev/fake_llm.py`` (the ``fake_llm_url`` fixture):
an OpenAI-compatible server whose replies are numbered words and whose streamed usage
is sent only when the request asks for it, which is what this test checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings, serve_app
from tests.fixtures.specs import agent, run_body, team


@pytest.mark.parametrize("fast_tokens", [True, False], ids=["lean stream", "autogen's stream"])
async def test_streams_deltas_and_real_usage_through_the_openai_client(
    tmp_path: Path, fake_llm_url: str, fast_tokens: bool
) -> None:
    settings = make_settings(tmp_path, openai_compatible_base_url=fake_llm_url, fast_tokens=fast_tokens)
    async with serve_app(settings) as (_, client):
        members = [agent("local", "openai_compatible/fake-t8")]
        r = await client.post("/v1/runs/wait", json=run_body(team=team(kind="single", members=members)))
        run = r.json()
        assert run["status"] == "succeeded", run
        assert run["result"]["text"] == "".join(f"w{i} " for i in range(8))
        # usage comes from the stream's final usage chunk, which is only sent when asked for
        assert run["usage"]["completion_tokens"] == 8
        assert run["usage"]["prompt_tokens"] > 0
        page = await client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
        deltas = [e["data"]["text"] for e in page.json()["data"] if e["type"] == "message.delta"]
        assert "".join(deltas) == run["result"]["text"]
        assert len(deltas) == 8


async def test_every_provider_client_shares_one_http_client(tmp_path: Path) -> None:
    from app.engine.providers import ModelRegistry

    registry = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url="http://127.0.0.1:9/v1"))
    ref = registry.parse("openai_compatible/some-model")
    first, second = registry.build(ref, streaming=True), registry.build(ref)
    shared = registry.http_client()
    # AsyncOpenAI keeps the httpx client it was given as `_client` (pinned openai version)
    assert first._client._client is shared  # type: ignore[attr-defined]
    assert second._client._client is shared  # type: ignore[attr-defined]
    await registry.aclose()
    assert shared.is_closed
