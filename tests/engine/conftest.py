"""Loopback model servers for the engine tests: ``shared/bench/fake_llm.py`` (a process), the scripted one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.engine.scripted_provider import ScriptedProvider
from tests.fixtures.process import free_port

FAKE_LLM = Path(__file__).resolve().parents[3] / "shared" / "bench" / "fake_llm.py"


@pytest.fixture
def fake_llm_url() -> Iterator[str]:
    """The OpenAI-compatible fake server beside the repository: numbered words, usage only when asked for."""
    if not FAKE_LLM.exists():
        pytest.skip(f"the OpenAI-compatible fake server is not at {FAKE_LLM}")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(FAKE_LLM), "--port", str(port)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # it prints its address once it listens
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider().running() as provider:
        yield provider
