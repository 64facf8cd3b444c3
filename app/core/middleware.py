"""Pure-ASGI middleware: request ids and the request body size limit; and ``send_problem``, which
answers with a problem before the app has (the API's authentication, ``app/auth/middleware.py``,
refuses that way too).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PROBLEM_BASE, PROBLEM_JSON


class RequestContext:
    """Binds a request id (from ``X-Request-ID`` or new) to logs and echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = raw if raw and len(raw) <= 64 and raw.isprintable() else uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


DRAIN_MAX_BYTES = 16 * 1024 * 1024  # past this, a refused body is not read: the connection is simply closed


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` with a 413 problem, by header and while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or []:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._drain(receive, int(value))
                await self._reject(scope, send)
                return
        received = 0
        too_large = False

        async def limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge(self.max_bytes)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _TooLarge:
            if not started:
                await self._drain(receive, 0)
                await self._reject(scope, send)

    @staticmethod
    async def _drain(receive: Receive, expected: int) -> None:
        """Read (and drop) what the client is still sending, within reason: a server that answers and
        closes while the body is in flight resets the connection, and the client (or a proxy in front)
        sees a broken connection instead of the 413."""
        if expected > DRAIN_MAX_BYTES:
            return
        drained = 0
        while drained <= DRAIN_MAX_BYTES:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            drained += len(message.get("body", b""))

    async def _reject(self, scope: Scope, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await send_problem(send, scope, 413, "payload_too_large", "Payload too large", detail)


def problem_bytes(scope: Scope, status: int, code: str, title: str, detail: str) -> bytes:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "instance": scope.get("path", ""),
    }
    return orjson.dumps(body)


async def send_problem(
    send: Send,
    scope: Scope,
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with a problem before the app has: an HTTP response, or a WebSocket handshake refusal."""
    data = problem_bytes(scope, status, code, title, detail)
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(data)).encode()),
        *[(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    ]
    prefix = "http.response"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            # a server without the denial extension: refuse the handshake (the client sees a 403)
            await send({"type": "websocket.close", "code": 4000 + status})
            return
        prefix = "websocket.http.response"
    await send({"type": f"{prefix}.start", "status": status, "headers": raw_headers})
    await send({"type": f"{prefix}.body", "body": data})


class _TooLarge(HTTPException):
    """Raised from ``receive`` once a body without a Content-Length grows past the limit.

    An ``HTTPException`` because FastAPI turns any other exception raised while it reads a body
    into a 400; this one it re-raises, and the error handlers render it as a 413 problem.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")
