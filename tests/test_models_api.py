"""`/v1/models` and the probes: what is configured, what agents get by default, and never a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings, serve_app

SECRET = "sk-test-SECRET123"


def providers(body: dict[str, object]) -> dict[str, bool]:
    rows = body["providers"]
    assert isinstance(rows, list)
    return {p["provider"]: p["configured"] for p in rows}


@pytest.fixture
async def keyed_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(make_settings(tmp_path, openai_api_key=SECRET)) as (_, c):
        yield c


async def test_default_settings_use_the_fake_model_and_say_so(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "fake/default"
    assert body["default_is_fake"] is True
    assert isinstance(body["notice"], str) and "fake" in body["notice"]
    configured = providers(body)
    assert set(configured) == {"openai", "azure_openai", "openai_compatible", "fake"}
    assert configured["fake"] is True
    assert configured["openai"] is False
    assert configured["azure_openai"] is False
    assert configured["openai_compatible"] is False
    assert all(p["how_to_configure"] for p in body["providers"])
    assert body["tools"] == ["calculator", "current_time", "search_history"]


async def test_an_openai_key_makes_openai_the_default_and_is_never_returned(
    keyed_client: httpx.AsyncClient,
) -> None:
    r = await keyed_client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "openai/gpt-4o-mini"
    assert body["default_is_fake"] is False
    assert body.get("notice") is None
    configured = providers(body)
    assert configured["openai"] is True
    assert configured["fake"] is True
    assert SECRET not in r.text
    assert "SECRET123" not in r.text


async def test_the_secret_is_in_no_other_response_either(keyed_client: httpx.AsyncClient) -> None:
    for path in ("/openapi.json", "/healthz", "/readyz", "/v1/teams/demo", "/v1/models"):
        r = await keyed_client.get(path)
        assert r.status_code == 200, path
        assert "SECRET123" not in r.text, path


async def test_healthz_is_200(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_readyz_is_200_with_its_checks(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": True, "bus": True}


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32


async def test_an_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "not_found"
