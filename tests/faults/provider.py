"""A misbehaving OpenAI-compatible server on loopback: the model name picks the fault.

``ok``: streams three words. ``err500`` / ``err429`` / ...: answers with that status (and, with
``echo_credentials``, an error message that repeats the Authorization header it got). ``hang``: reads
the request and never answers. ``stall``: streams two words, then nothing (the connection stays
open). ``drop``: streams two words, then closes the connection mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

SECRET_ECHO = "the key you sent was: "


def _chunk(text: str) -> bytes:
    data = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    body = b"data: " + json.dumps(data).encode() + b"\n\n"
    return f"{len(body):x}\r\n".encode() + body + b"\r\n"


class FaultyProvider:
    def __init__(self, *, echo_credentials: bool = False) -> None:
        self.echo_credentials = echo_credentials
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
            body = json.loads(await reader.readexactly(length))
            self.requests += 1
            model = body["model"]
            authorization = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
            if model.startswith("err"):
                status = int(model[3:])
                # a careless provider may echo the credentials in its error
                message = SECRET_ECHO + authorization if self.echo_credentials else f"upstream error {status}"
                payload = json.dumps({"error": {"message": message}}).encode()
                writer.write(
                    # x-should-retry: the OpenAI SDK's own retries would outlast the test's model timeout
                    f"HTTP/1.1 {status} Error\r\nContent-Type: application/json\r\nx-should-retry: false\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                return
            if model == "hang":
                self._held.append(writer)
                await asyncio.Event().wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            words = ["one ", "two ", "three"] if model == "ok" else ["one ", "two "]
            for word in words:
                writer.write(_chunk(word))
                await writer.drain()
                await asyncio.sleep(0.01)
            if model == "stall":
                self._held.append(writer)
                await asyncio.Event().wait()
            if model == "drop":
                writer.transport.abort()  # the connection goes away mid-stream
                return
            done = b"data: [DONE]\n\n"
            writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FaultyProvider]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield self
        finally:
            for writer in self._held:
                writer.transport.abort()
            self._server.close()
