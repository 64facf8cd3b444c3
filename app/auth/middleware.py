"""The API's guards, as pure-ASGI middleware in front of every route of ``/v1``.

``ApiAuth`` authenticates: it runs before any route of ``/v1`` (HTTP and WebSocket), so a route
cannot forget to authenticate, and a socket is refused before it is accepted. It leaves the
principal in the request's state, where the ``PrincipalDep`` dependency reads it. How a token
becomes a principal is the ``Authenticate`` function it is given (the composition hands it the
app's ``Authenticator``).

A key may also come as an ``access_token`` query parameter, for browsers' ``WebSocket`` and
``EventSource``, which cannot set headers. ``QueryKey`` takes it out of every request's query
string before anything can log it: uvicorn's access log prints the query string it finds in the
scope when the response starts, and a middleware outside ``ApiAuth`` (the body limit, the origin
check) may answer first.

``OriginCheck`` refuses what a web page of another site makes a browser send (issue 25). A browser
on the developer's machine reaches a server on loopback whatever page it shows, and sends no key of
ours (keys are never cookies), so on an open server its requests would be served as the local
principal:

- **Host, against DNS rebinding.** A page of ``attacker.example`` can make its own name resolve
  to ``127.0.0.1`` and then read the answers as same-origin ones; its requests still name the
  attacker's host in ``Host``. While the server may answer without a key (it listens on loopback,
  keys are not required by configuration), a request whose ``Host`` is not ``localhost``, a
  loopback address or a name of ``SWARM_ALLOWED_HOSTS`` is refused ``400 invalid_host``. A server
  that requires keys answers to any name (a proxy or a load balancer in front picks them).
- **Origin, against cross-site requests.** A page may open a WebSocket to any address (browsers
  apply no same-origin rule to sockets) and send simple requests anywhere, but it cannot hide or
  forge its ``Origin``. A socket, or a request under ``/v1`` (or a protocol's prefix,
  ``/openai``, ``/agui``), whose ``Origin`` is neither the
  server's own nor in ``SWARM_ALLOWED_ORIGINS`` is refused ``403 forbidden_origin``, on every
  server: a key in a URL does not say which page sent it. Programs (curl, the CLI, SDKs) send no
  ``Origin`` and are not concerned.

The server's own origin is the one whose host and port are those the request was sent to (its
``Host``). The scheme is not compared: a proxy that ends TLS forwards ``http``, and no other page
can be served from the server's own host and port.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import unquote_plus, urlsplit

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth.service import Principal, Unauthorized, bearer_token, is_loopback, why_auth_required
from app.core.middleware import send_problem
from app.core.settings import Settings

log = structlog.get_logger(__name__)


class Authenticate(Protocol):
    """The caller of a request (its scope, its token if any); raises ``Unauthorized``. ``malformed``:
    credentials were sent but unreadable."""

    async def __call__(self, scope: Scope, token: str | None, *, malformed: bool) -> Principal: ...


class ApiAuth:
    """Authenticates every HTTP request and WebSocket under ``prefix``; the rules are in ``app.auth.service``.

    The key is the ``Authorization: Bearer`` header's or, without one, the ``access_token`` query
    parameter's (see ``QueryKey``).
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
        query_token = take_query_token(scope)
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


QUERY_TOKEN = "swarmdirector.query_token"  # where a key taken out of the query string waits, in the scope


class QueryKey:
    """Takes the ``access_token`` query parameter out of every request's and socket's query string.

    It sits outside every middleware that may answer, so no log line, uvicorn's access log included,
    ever prints a key; ``ApiAuth`` finds it in the scope.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            take_query_token(scope)
        await self.app(scope, receive, send)


def take_query_token(scope: Scope) -> str | None:
    """The key of the ``access_token`` query parameter (the last one), taken out of the query string.

    A second call answers what the first took. The parameter's name may be percent-encoded: it is
    found as the application would read it.
    """
    if QUERY_TOKEN in scope:
        taken: str | None = scope[QUERY_TOKEN]
        return taken
    raw: bytes = scope.get("query_string", b"")
    token = None
    if b"access_token" in raw or b"%" in raw:
        kept: list[bytes] = []
        tokens: list[str] = []
        for part in raw.split(b"&"):
            name, _, value = part.partition(b"=")
            if unquote_plus(name.decode("latin-1")) == "access_token":
                tokens.append(unquote_plus(value.decode("latin-1")))
            else:
                kept.append(part)  # as sent, byte for byte
        if tokens:
            scope["query_string"] = b"&".join(kept)
            token = tokens[-1] or None
    scope[QUERY_TOKEN] = token
    return token


DEFAULT_PORTS = {"http": 80, "https": 443}

INVALID_HOST = (
    "This server answers only requests addressed to it by `localhost`, a loopback address or a name "
    "in SWARM_ALLOWED_HOSTS; this request's Host header names another."
)
FORBIDDEN_ORIGIN = (
    "The request comes from a web page of another origin. The server accepts browser requests from "
    "its own origin and from those in SWARM_ALLOWED_ORIGINS."
)


API_PREFIXES = ("/v1", "/openai", "/agui")  # our API and the protocol views (app/protocols/)


class OriginCheck:
    """Refuses a foreign ``Host`` while the server may be open, and a foreign ``Origin`` under any of
    ``prefixes``."""

    def __init__(self, app: ASGIApp, settings: Settings, prefixes: tuple[str, ...] = API_PREFIXES) -> None:
        self.app = app
        self.prefixes = prefixes
        self.check_host = why_auth_required(settings) is None
        # the settings checked their form (app/core/settings.py)
        self.hosts = frozenset(name.lower().strip("[]") for name in settings.allowed_hosts)
        self.origins = frozenset(found for origin in settings.allowed_origins if (found := _origin(origin)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope.get("headers") or ():
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        # a request without Host did not come from a browser, which always sends one
        if self.check_host and host is not None and not self._names_server(host):
            log.warning("request_refused", reason="host", host=host[:200], path=scope.get("path"))
            await send_problem(send, scope, 400, "invalid_host", "Invalid Host", INVALID_HOST)
            return
        path: str = scope.get("path", "")
        guarded = scope["type"] == "websocket" or any(_under(path, prefix) for prefix in self.prefixes)
        if origin is not None and guarded and not self._allows(origin, host):
            log.warning("request_refused", reason="origin", origin=origin[:200], path=path)
            await send_problem(send, scope, 403, "forbidden_origin", "Forbidden origin", FORBIDDEN_ORIGIN)
            return
        await self.app(scope, receive, send)

    def _names_server(self, host: str) -> bool:
        found = _host(host)
        return found is not None and (is_loopback(found[0]) or found[0] in self.hosts)

    def _allows(self, origin: str, host: str | None) -> bool:
        found = _origin(origin)
        if found is None:
            return False  # `null` (a sandboxed frame, a file), or not a web origin at all
        if found in self.origins:
            return True
        addressed = _host(host) if host is not None else None
        if addressed is None:
            return False
        scheme, name, port = found
        return addressed == (name, port) or (addressed == (name, None) and port == DEFAULT_PORTS[scheme])


def _host(value: str) -> tuple[str, int | None] | None:
    """The name (lower case, IPv6 without brackets) and port of a ``Host`` header; None when it is not one."""
    if "@" in value:
        return None
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.netloc != value:
        return None
    return parts.hostname, port


def _origin(value: str) -> tuple[str, str, int] | None:
    """The scheme, name and port of an http(s) origin (``https://app.example:8443``); None when it is not one."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]
