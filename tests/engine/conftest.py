"""Loopback model servers for the engine tests: the project's fake model server (a process), the scripted one."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.engine.scripted_provider import ScriptedProvider
from tests.fixtures.process import fake_llm


@pytest.fixture
def fake_llm_url() -> Iterator[str]:
    """``swarmdirector dev fake-llm`` (``app/dev/fake_llm.py``) on a free port: numbered words, usage when asked."""
    with fake_llm(sys.executable, "-m", "app.dev.fake_llm") as url:
        yield url


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider().running() as provider:
        yield provider
