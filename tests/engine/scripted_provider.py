"""An OpenAI-compatible chat-completions server on loopback whose streams are scripted per model name.

``app/dev/fake_llm.py`` only streams words; this one streams what the equivalence tests need
to hold the lean stream and AutoGen's stock client to the same results: tool calls (one, parallel,
with text beside them), reasoning, logprobs, empty chunks, odd line endings and keep-alives, an
error event inside a 200 stream. It records every request (path, query, headers, JSON body) so the
two clients' requests can be compared too. Models named ``flaky<N>-<scenario>`` answer 429 to
their first N requests; ``gzip429`` answers 429 with a gzipped body; ``cookie-<scenario>`` sets a
cookie with its answer. It counts the connections it accepted. It answers a proxy's requests too
(an absolute target), as the provider behind it would: the proxy tests use it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "scripted", "choices": [choice]}


def tool_part(index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None) -> Any:
    part: dict[str, Any] = {"index": index}
    if id is not None:
        part.update(id=id, type="function")
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        part["function"] = function
    return part


def text_chunks(*words: str) -> list[dict[str, Any]]:
    return [chunk({"role": "assistant", "content": ""}), *(chunk({"content": w}) for w in words)]


LOGPROB = {
    "token": "x",
    "logprob": -0.5,
    "bytes": [120],
    "top_logprobs": [{"token": "x", "logprob": -0.5, "bytes": [120]}],
}

# model name -> the chunks of its stream (before the usage chunk, which comes when asked for)
SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "text": [*text_chunks("Hello", ", ", "world", "."), chunk(finish="stop")],
    "tool": [
        chunk({"role": "assistant", "tool_calls": [tool_part(0, id="call_1", name="calculator", arguments="")]}),
        chunk({"tool_calls": [tool_part(0, arguments='{"expres')]}),
        chunk({"tool_calls": [tool_part(0, arguments='sion": "2+2"}')]}),
        chunk(finish="tool_calls"),
    ],
    "parallel": [
        chunk({"role": "assistant", "tool_calls": [tool_part(0, id="call_a", name="calculator", arguments='{"ex')]}),
        chunk({"tool_calls": [tool_part(1, id="call_b", name="current_time", arguments="{")]}),
        chunk({"tool_calls": [tool_part(0, arguments='pression": "1+1"}')]}),
        chunk({"tool_calls": [tool_part(1, arguments="}")]}),
        chunk(finish="tool_calls"),
    ],
    "thought-tool": [
        *text_chunks("Let me ", "compute."),
        chunk({"tool_calls": [tool_part(0, id="call_t", name="calculator", arguments='{"expression": "3"}')]}),
        chunk(finish="tool_calls"),
    ],
    "reasoning": [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Think"}),
        chunk({"content": None, "reasoning_content": "ing..."}),
        chunk({"content": "Answer", "reasoning_content": None}),
        chunk({"content": "!"}),
        chunk(finish="stop"),
    ],
    "logprobs": [*text_chunks("a", "b"), chunk({}, "length", logprobs={"content": [LOGPROB]})],
    "empty-chunks": [
        *(
            {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": []}
            for _ in range(11)
        ),
        *text_chunks("after", " empties"),
        chunk(finish="stop"),
    ],
    "nothing": [chunk({"role": "assistant"}), chunk(finish="stop")],
    "two-choices": [
        {**chunk({"content": "first"}), "choices": [chunk({"content": "first"})["choices"][0]] * 2},
        chunk(finish="stop"),
    ],
    "function-call": [chunk({"content": "x"}), chunk(finish="function_call")],
    "crlf": [*text_chunks("line", " endings"), chunk(finish="stop")],
    "split": [*text_chunks("split", " across", " reads"), chunk(finish="stop")],
    "error-event": [*text_chunks("partial"), {"error": {"message": "the model is overloaded", "type": "server_error"}}],
    "usage-with-finish": [*text_chunks("done")],
}
FLAKY = re.compile(r"^flaky(\d+)-(.+)$")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    target: str = ""  # the request line's target as sent: absolute (``http://host/...``) through a proxy


def _encode(event: dict[str, Any], scenario: str) -> list[bytes]:
    """One event as the HTTP chunks that carry it."""
    data = json.dumps(event, separators=(",", ":")).encode()
    if scenario == "crlf":
        return [b": keep-alive\r\n\r\ndata: " + data + b"\r\n\r\n"]
    if scenario == "split":
        whole = b"data: " + data + b"\n\n"
        cut = len(whole) // 2
        return [whole[:cut], whole[cut:-1], whole[-1:]]  # the blank line arrives on its own
    return [b"data: " + data + b"\n\n"]


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class ScriptedProvider:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.connections = 0
        self._served: dict[str, int] = {}
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if ": " in line)}
                body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
                url = urlsplit(target)
                self.requests.append(Recorded(method, url.path, dict(parse_qsl(url.query)), headers, body, target))
                await self._answer(body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = body["model"]
        flaky = FLAKY.match(model)
        if flaky:
            self._served[model] = self._served.get(model, 0) + 1
            model = flaky.group(2)
            if self._served[body["model"]] <= int(flaky.group(1)):
                payload = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()
                writer.write(
                    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                return
        if model == "gzip429":
            payload = gzip.compress(json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode())
            writer.write(
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        cookie = b""
        if model.startswith("cookie-"):
            model, cookie = model.removeprefix("cookie-"), b"Set-Cookie: session=s3cret; Path=/\r\n"
        events = [dict(e) for e in SCENARIOS[model]]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            if model == "usage-with-finish":
                # a usage chunk that also carries the finish reason (liteLLM does this)
                events.append({**chunk(finish="stop"), "usage": usage})
            else:
                events.append(
                    {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": usage}
                )
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + cookie + b"\r\n"
        )
        for event in events:
            for part in _encode(event, model):
                writer.write(_http_chunk(part))
                await writer.drain()
        writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedProvider]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
