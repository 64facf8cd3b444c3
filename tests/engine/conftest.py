"""Loopback model servers for the engine tests: the project's fake model server (a process), the scripted one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.engine.scripted_provider import ScriptedProvider


@pytest.fixture
def fake_llm_url() -> Iterator[str]:
    """``swarmdirector dev fake-llm`` (``app/dev/fake_llm.py``) on a free port: numbered words, usage when asked."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.dev.fake_llm", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # it prints its base URL once it listens
        assert line.startswith("fake model server on http://"), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider().running() as provider:
        yield provider
