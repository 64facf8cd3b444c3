"""What the OpenAI dialect's tests share: a live server that requires keys, the official SDK on it,
and a plain client of its `/v1` API with the same key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from openai import AsyncOpenAI

from app.auth.service import LOCAL_PRINCIPAL
from tests.conftest import LiveServer
from tests.fixtures.principals import api_key_headers


@pytest.fixture
async def local_key(live_server: LiveServer) -> dict[str, str]:
    """A key of the local principal (who owns `demo`): with it the server requires keys, as a
    deployed one does (an open server takes any key: see test_router.py)."""
    return await api_key_headers(live_server.app, LOCAL_PRINCIPAL)


@pytest.fixture
async def sdk(live_server: LiveServer, local_key: dict[str, str]) -> AsyncIterator[AsyncOpenAI]:
    key = local_key["authorization"].removeprefix("Bearer ")
    async with AsyncOpenAI(base_url=f"{live_server.url}/openai/v1", api_key=key, max_retries=0) as client:
        yield client


@pytest.fixture
async def live_client(live_server: LiveServer, local_key: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, headers=local_key, timeout=30) as client:
        yield client
