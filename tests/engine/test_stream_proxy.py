"""The lean stream goes through the proxy the SDK's httpx client would use, read from the environment once.

aiohttp's own ``trust_env`` reads the proxies (and ``~/.netrc``) in a thread on every request, and
ignores ``ALL_PROXY``; the endpoint now carries httpx's choice, made when the provider's client is.
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.engine.openai_stream import LeanOpenAIChatCompletionClient, env_proxy
from app.engine.providers import ModelRegistry
from tests.conftest import make_settings
from tests.engine.scripted_provider import ScriptedProvider
from tests.engine.test_openai_stream import stream

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# environment -> {url: the proxy it goes through, or None}
CASES: list[tuple[dict[str, str], dict[str, str | None]]] = [
    ({}, {"http://api.example.com/v1": None, "https://api.example.com/v1": None}),
    (
        {"HTTP_PROXY": "http://p1:3128"},
        {"http://api.example.com/v1": "http://p1:3128", "https://api.example.com/v1": None},
    ),
    (
        {"HTTPS_PROXY": "http://p2:3128"},
        {"http://api.example.com/v1": None, "https://api.example.com/v1": "http://p2:3128"},
    ),
    (  # aiohttp's trust_env ignored ALL_PROXY; httpx (the SDK) honours it
        {"ALL_PROXY": "http://all:8080"},
        {"http://api.example.com/v1": "http://all:8080", "https://api.example.com/v1": "http://all:8080"},
    ),
    (  # the scheme's own proxy before ALL_PROXY
        {"ALL_PROXY": "http://all:8080", "HTTPS_PROXY": "http://p2:3128"},
        {"http://api.example.com/v1": "http://all:8080", "https://api.example.com/v1": "http://p2:3128"},
    ),
    (  # NO_PROXY: an address, a domain and its subdomains, localhost
        {"ALL_PROXY": "http://all:8080", "NO_PROXY": "127.0.0.1, example.com,localhost"},
        {
            "http://127.0.0.1:9000/v1": None,
            "https://api.example.com/v1": None,
            "https://example.com/v1": None,
            "http://localhost:1234/v1": None,
            "https://api.openai.com/v1": "http://all:8080",
        },
    ),
    (  # a leading dot: subdomains only
        {"HTTPS_PROXY": "http://p2:3128", "NO_PROXY": ".example.com"},
        {"https://api.example.com/v1": None, "https://example.com/v1": "http://p2:3128"},
    ),
    ({"ALL_PROXY": "http://all:8080", "NO_PROXY": "*"}, {"https://api.openai.com/v1": None}),
    ({"HTTP_PROXY": "p3:3128"}, {"http://api.example.com/v1": "http://p3:3128"}),  # no scheme: http
    (  # credentials stay in the proxy's URL (sent as Proxy-Authorization)
        {"HTTPS_PROXY": "http://user:secret@p4:3128"},
        {"https://api.openai.com/v1": "http://user:secret@p4:3128"},
    ),
]


@pytest.mark.parametrize(("env", "expected"), CASES, ids=[" ".join(env) or "none" for env, _ in CASES])
def test_the_proxy_is_the_one_httpx_uses(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: dict[str, str | None]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = httpx.AsyncClient()  # as the SDK's: trust_env
    for url, proxy in expected.items():
        chosen = env_proxy(httpx.URL(url))
        assert (str(chosen) if chosen is not None else None) == proxy, url
        # and httpx agrees that the request goes through a proxy, or straight
        assert (client._transport_for_url(httpx.URL(url)) is not client._transport) == (proxy is not None), url


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted.append(fn)
        return super().submit(fn, *args, **kwargs)


async def test_the_stream_goes_through_the_environments_proxy_with_its_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: ScriptedProvider
) -> None:
    """The provider's host does not resolve: only the proxy (the scripted server) can answer, and it is
    asked for the provider's absolute URL with the proxy's credentials, by both clients alike."""
    proxy = scripted.origin.replace("http://", "http://user:s3cret@")
    monkeypatch.setenv("ALL_PROXY", proxy)
    models = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url="http://provider.invalid/v1"))
    ref = models.parse("openai_compatible/text")
    stock, lean = models.build(ref, streaming=True), models.build(ref, streaming=True, lean=True)
    assert isinstance(lean, LeanOpenAIChatCompletionClient)
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        expected, got = (await stream(stock))[0], (await stream(lean))[0]
        assert got == expected and got[:4] == ["Hello", ", ", "world", "."]
        # no thread per request: the proxy was chosen when the provider's client was made
        lean_requests = len(executor.submitted)
        await stream(lean)
        assert len(executor.submitted) == lean_requests
    finally:
        await models.aclose()
    auth = "Basic " + base64.b64encode(b"user:s3cret").decode()
    sent = [(r.target, r.headers.get("proxy-authorization")) for r in scripted.requests]
    assert sent == [("http://provider.invalid/v1/chat/completions", auth)] * 3


async def test_no_proxy_for_the_provider_goes_straight_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: ScriptedProvider
) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    models = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url=scripted.base_url))
    lean = models.build(models.parse("openai_compatible/text"), streaming=True, lean=True)
    try:
        assert (await stream(lean))[0][:4] == ["Hello", ", ", "world", "."]
    finally:
        await models.aclose()
    assert [(r.target, r.headers.get("proxy-authorization")) for r in scripted.requests] == [
        ("/v1/chat/completions", None)
    ]
