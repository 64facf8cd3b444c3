"""An OpenAI-compatible chat-completions server that answers in numbered words, fast and the same every time.

It is the model behind ``make bench`` and several tests, and a way to try the ``openai_compatible``
provider without a key::

    swarmdirector dev fake-llm --port 8090
    SWARM_OPENAI_COMPATIBLE_BASE_URL=http://127.0.0.1:8090/v1 make run

Standard library only, and an HTTP/1.1 loop of its own on asyncio streams, so that it costs as
little CPU as possible beside the server it feeds: it is a load generator, not a model.

The reply is chosen by the request's ``model``, so one process serves every workload:

==========================  ============================================================
``fake``                    32 words (``w0 w1 ... w31``), at once
``fake-t64``                64 words
``fake-t64-d20``            64 words, 20 ms before each streamed word
``fake-t64-d20-f50``        ... and 50 ms before the first chunk
``fake-t8-end``             8 words, then ``TERMINATE``
==========================  ============================================================

Any other model name answers as ``fake``. Routes: ``POST /v1/chat/completions`` (streamed when
``stream`` is true: a role chunk, one chunk per word, a ``stop`` chunk, a usage chunk when
``stream_options.include_usage`` asks for one, then ``[DONE]``), ``GET /v1/models``,
``GET /health``, and ``GET /stats`` (requests served, chunks sent, streams open now, and how many
messages the last request carried, to check that a caller sent its history or stopped calling).
Usage counts a word as one completion token and four characters of the prompt as one prompt token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

MODEL = re.compile(r"fake(?:-t(?P<words>\d+))?(?:-d(?P<delay>\d+))?(?:-f(?P<first>\d+))?(?P<end>-end)?")
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@dataclass(frozen=True, slots=True)
class Workload:
    """What a model name asks for: how many words, the delay before each and before the first."""

    words: int = 32
    delay_s: float = 0.0
    first_s: float = 0.0
    end: bool = False

    @classmethod
    def of(cls, model: str) -> Workload:
        m = MODEL.fullmatch(model or "")
        if m is None:
            return cls()
        return cls(
            words=int(m["words"] or 32),
            delay_s=int(m["delay"] or 0) / 1000,
            first_s=int(m["first"] or 0) / 1000,
            end=m["end"] is not None,
        )

    def reply(self) -> list[str]:
        words = [f"w{i} " for i in range(self.words)]
        return [*words, "TERMINATE"] if self.end else words


def prompt_tokens(request: dict[str, Any]) -> int:
    text = " ".join(str(m.get("content") or "") for m in request.get("messages") or ())
    return max(1, len(text) // 4)


def usage(request: dict[str, Any], words: int) -> dict[str, int]:
    prompt = prompt_tokens(request)
    return {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words}


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    body = f"data: {data}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(body), body)  # one HTTP chunk per event


class FakeLLM:
    """The server's state: counters for ``/stats``; one ``handle`` per connection."""

    def __init__(self) -> None:
        self.requests = 0
        self.chunks_sent = 0
        self.open_streams = 0
        self.last_messages = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection, request after request, until the client closes it."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (h.partition(":") for h in header_lines if ":" in h)
                )
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                await self.route(method, target.partition("?")[0], body, writer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            return
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if method == "POST" and path == "/v1/chat/completions":
            try:
                request = json.loads(body or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.send_json(writer, 400, {"error": {"message": "The body is not a JSON object.", "type": "bad"}})
                return
            self.requests += 1
            self.last_messages = len(request.get("messages") or ())
            if request.get("stream"):
                await self.stream(request, writer)
            else:
                await self.complete(request, writer)
        elif method == "GET" and path in ("/v1/models", "/health"):
            models = {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "dev"}]}
            self.send_json(writer, 200, models)
        elif method == "GET" and path == "/stats":
            stats = {
                "requests": self.requests,
                "chunks_sent": self.chunks_sent,
                "open_streams": self.open_streams,
                "last_messages": self.last_messages,
            }
            self.send_json(writer, 200, stats)
        else:
            self.send_json(writer, 404, {"error": {"message": f"No route for {method} {path}.", "type": "not_found"}})

    @staticmethod
    def send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\ncontent-type: application/json\r\n"
        writer.write(f"{head}content-length: {len(data)}\r\n\r\n".encode() + data)

    async def complete(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = str(request.get("model") or "fake")
        work = Workload.of(model)
        await asyncio.sleep(work.first_s + work.delay_s * work.words)
        text = "".join(work.reply())
        reply = {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage(request, work.words),
        }
        self.send_json(writer, 200, reply)
        await writer.drain()

    async def stream(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        model = str(request.get("model") or "fake")
        work = Workload.of(model)
        base = {"id": f"chatcmpl-{self.requests}", "object": "chat.completion.chunk", "created": int(time.time())}
        base["model"] = model

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        writer.write(STREAM_HEAD)
        self.open_streams += 1
        try:
            if work.first_s:
                await asyncio.sleep(work.first_s)
            writer.write(chunk({"role": "assistant", "content": ""}))
            for word in work.reply():
                if work.delay_s:
                    await asyncio.sleep(work.delay_s)
                writer.write(chunk({"content": word}))
                self.chunks_sent += 1
                await writer.drain()
        finally:
            self.open_streams -= 1
        writer.write(chunk({}, "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            writer.write(sse({**base, "choices": [], "usage": usage(request, work.words)}))
        writer.write(sse("[DONE]") + b"0\r\n\r\n")
        await writer.drain()


async def serve(host: str, port: int, *, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled; prints its base URL once it listens."""
    server = await asyncio.start_server(FakeLLM().handle, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"fake model server on http://{host}:{bound}/v1", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
