"""``ApiAuth``: the API's authentication, as pure-ASGI middleware in front of every route of ``/v1``.

It runs before any route of ``/v1`` (HTTP and WebSocket): a route cannot forget to authenticate,
and a socket is refused before it is accepted. It leaves the principal in the request's state,
where the ``PrincipalDep`` dependency reads it. How a token becomes a principal is the
``Authenticate`` function it is given (the composition hands it the app's ``Authenticator``).
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import parse_qsl, urlencode

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.service import Principal, Unauthorized, bearer_token
from app.core.middleware import send_problem

log = structlog.get_logger(__name__)


class Authenticate(Protocol):
    """The caller of a request (its scope, its token if any); raises ``Unauthorized``. ``malformed``:
    credentials were sent but unreadable."""

    async def __call__(self, scope: Scope, token: str | None, *, malformed: bool) -> Principal: ...


class ApiAuth:
    """Authenticates every HTTP request and WebSocket under ``prefix``; the rules are in ``app.auth.service``.

    A socket may carry its key as an ``access_token`` query parameter (browsers cannot set headers on
    a WebSocket); it is taken out of the query string here, so no access log ever prints it.
    """

    def __init__(self, app: ASGIApp, authenticate: Authenticate, prefix: str = "/v1") -> None:
        self.app = app
        self.authenticate = authenticate
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _under(scope.get("path", ""), self.prefix):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        token = bearer_token(authorization)
        malformed = authorization is not None and token is None
        if scope["type"] == "websocket":
            query_token = _take_query_token(scope)
            if token is None and not malformed:
                token = query_token
        try:
            principal = await self.authenticate(scope, token, malformed=malformed)
        except Unauthorized as exc:
            await send_problem(
                send, scope, 401, exc.code, exc.title, exc.detail or exc.title, {"WWW-Authenticate": "Bearer"}
            )
            return
        except (SQLAlchemyError, OSError) as exc:
            log.error("auth_storage_unavailable", error=type(exc).__name__)
            detail = "The database is not reachable; try again shortly."
            await send_problem(send, scope, 503, "unavailable", "Service unavailable", detail, {"Retry-After": "1"})
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _take_query_token(scope: Scope) -> str | None:
    raw = scope.get("query_string", b"")
    if b"access_token" not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    tokens = [v for k, v in pairs if k == "access_token"]
    scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "access_token"]).encode("latin-1")
    return tokens[-1] if tokens and tokens[-1] else None
