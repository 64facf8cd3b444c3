"""Retries against a real loopback server: before the first token, after a reset or a 429, as long as asked.

``docs/teams.md`` promises a retry of a model call that fails before its first token. A provider
that resets the connection after its role-only first chunk has sent no token yet; a 429's
``Retry-After`` says how long to wait. Each server here answers its first request badly and its
next one well, and counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from autogen_core.models import CreateResult, UserMessage

from app.engine.calls import CallPolicy, GuardedModelClient, ModelCall, ModelCallError
from app.engine.providers import ModelRegistry
from tests.conftest import make_settings

ROLE = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
ANSWER = (
    ROLE
    + b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi."}}]}\n\n'
    + b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    + b"data: [DONE]\n\n"
)
REFUSAL = (
    b'{"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}'
)


class FlakyServer:
    """Its first request gets ``first`` (``reset``: a role chunk, then a TCP reset; or ``429:<after>``)."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.times: list[float] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FlakyServer]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                await reader.readexactly(length)
                self.times.append(time.monotonic())
                if len(self.times) == 1 and self.first == "reset":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
                    writer.write(b"transfer-encoding: chunked\r\n\r\n")
                    writer.write(b"%x\r\n%s\r\n" % (len(ROLE), ROLE))
                    await writer.drain()
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                    writer.transport.abort()
                    return
                if len(self.times) == 1 and self.first.startswith("429:"):
                    after = self.first.split(":", 1)[1]
                    writer.write(
                        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
                        + f"retry-after: {after}\r\ncontent-length: {len(REFUSAL)}\r\n\r\n".encode()
                        + REFUSAL
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
                        + ANSWER
                    )
                await writer.drain()


async def ask(tmp_path: Path, port: int, *, lean: bool) -> tuple[CreateResult | ModelCallError, ModelCall]:
    models = ModelRegistry(make_settings(tmp_path, openai_compatible_base_url=f"http://127.0.0.1:{port}/v1"))
    ref = models.parse("openai_compatible/m")
    calls: list[ModelCall] = []
    policy = CallPolicy(timeout_s=10, max_retries=2, backoff_s=0.01)
    client = GuardedModelClient(
        models.build(ref, streaming=True, lean=lean), policy, agent="a", model=str(ref), observer=calls.append
    )
    outcome: CreateResult | ModelCallError | None = None
    try:
        async for item in client.create_stream([UserMessage(content="hi", source="user")]):
            if isinstance(item, CreateResult):
                outcome = item
    except ModelCallError as exc:
        outcome = exc
    finally:
        await models.aclose()
    assert outcome is not None and len(calls) == 1
    return outcome, calls[0]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
async def test_a_reset_after_the_role_chunk_is_retried(tmp_path: Path, lean: bool) -> None:
    async with FlakyServer("reset").running() as server:
        result, record = await ask(tmp_path, server.port, lean=lean)
    assert isinstance(result, CreateResult) and result.content == "Hi."
    assert record.attempts == 2 and record.error_code is None and len(server.times) == 2


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
async def test_a_429_waits_as_long_as_its_retry_after_asks(tmp_path: Path, lean: bool) -> None:
    async with FlakyServer("429:1").running() as server:
        result, record = await ask(tmp_path, server.port, lean=lean)
    assert isinstance(result, CreateResult) and record.attempts == 2
    # our own backoff would have waited about 0.01-0.02 s; the provider asked for a second
    assert server.times[1] - server.times[0] >= 1.0


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock"])
async def test_a_retry_after_too_long_fails_at_once_and_says_so(tmp_path: Path, lean: bool) -> None:
    async with FlakyServer("429:120").running() as server:
        result, record = await ask(tmp_path, server.port, lean=lean)
    assert isinstance(result, ModelCallError) and result.code == "rate_limited"
    assert "retry after 120 s" in result.message and "Rate limit reached" in result.message
    assert record.attempts == 1 and len(server.times) == 1
