"""A second OpenAI client nobody here wrote: LiteLLM, as a gateway in front of the server would call it."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import httpx
import pytest

from app.auth.service import LOCAL_PRINCIPAL
from tests.conftest import LiveServer
from tests.fixtures.principals import api_key_headers


def _litellm(monkeypatch: pytest.MonkeyPatch) -> Any:
    # its price list ships in the wheel: never fetched from outside
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own imports' deprecations, not ours
        return importlib.import_module("litellm")


async def test_litellm_streams_a_chat(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = _litellm(monkeypatch)
    key = await api_key_headers(live_server.app, LOCAL_PRINCIPAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # litellm loads parts of itself lazily: their warnings are not ours
        stream = await litellm.acompletion(
            model="openai/demo",
            api_base=f"{live_server.url}/openai/v1",
            api_key=key["authorization"].removeprefix("Bearer "),
            messages=[{"role": "user", "content": "Write a haiku about rivers."}],
            stream=True,
            max_retries=0,
        )
        chunks = [chunk async for chunk in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    async with httpx.AsyncClient(base_url=live_server.url, headers=key) as client:
        runs = (await client.get("/v1/runs")).json()["data"]
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert content == runs[0]["result"]["text"]
