"""OpenAI's error body for every error under ``/openai/v1``, whoever answered it.

The server's errors are problems (``application/problem+json``), made by the error handlers and by
the middleware that answer before a route (the body size limit, an unknown path). OpenAI's SDKs
parse ``{"error": {"message", "type", "code", "param"}}`` instead, so this middleware rewrites
the problems of that prefix, and only those: any other response passes through untouched, the
streams included, at the cost of one header look per response. A 422 becomes OpenAI's 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PROBLEM_JSON

PREFIX = "/openai/v1"
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _TYPES.get(status, "invalid_request_error")


def openai_error(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "code": code, "param": param}}


def _param(problem: dict[str, Any]) -> str | None:
    """The first bad field of a problem, as OpenAI names it (``messages.0.content``)."""
    errors = problem.get("errors") or []
    if not errors:
        return None
    loc = [str(p) for p in errors[0].get("loc", [])]
    if loc and loc[0] in ("body", "query", "header", "path"):
        loc = loc[1:]
    return ".".join(loc) or None


def from_problem(problem: dict[str, Any]) -> tuple[int, bytes]:
    """A problem document as OpenAI's error body, with the status OpenAI would give it."""
    status = int(problem.get("status", 500))
    if status == 422:
        status = 400
    message = problem.get("detail") or problem.get("title") or "Error"
    body = openai_error(status, message, problem.get("code"), _param(problem))
    return status, orjson.dumps(body)


class OpenAIErrors:
    """Rewrites the problems answered under ``/openai/v1`` as OpenAI error bodies."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if any(k == b"content-type" and v.startswith(PROBLEM_JSON.encode()) for k, v in headers):
                    start = message  # held until its body is whole
                    return
            elif start is not None and message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                await _send_rewritten(send, start, b"".join(body))
                return
            await send(message)

        await self.app(scope, receive, rewriting_send)


async def _send_rewritten(send: Send, start: Message, raw: bytes) -> None:
    try:
        problem = orjson.loads(raw)
    except orjson.JSONDecodeError:
        problem = {"status": start["status"]}
    status, body = from_problem(problem if isinstance(problem, dict) else {"status": start["status"]})
    kept = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-type", b"content-length")]
    headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
