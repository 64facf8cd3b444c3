"""How the CLI talks to a running server: the connection options, and the API's errors as messages.

Every client command takes ``--url`` and ``--api-key`` (or ``SWARM_URL`` and
``SWARM_API_KEY``). A problem+json answer becomes an ``ApiError`` that reads
like the server meant it; a server that cannot be reached says how to start one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import ServerSentEvent, aconnect_sse

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="SWARM_URL", help="The server's base URL.", show_default=True),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="SWARM_API_KEY",
        help="An API key (`swarmdirector keys create`); none for an open server.",
        show_default=False,
    ),
]


class ApiError(Exception):
    """The server refused a request; the message is its problem document, for a person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachable(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"Cannot reach a SwarmDirector server at {url}. Start one with `swarmdirector serve`, "
            "point --url (or SWARM_URL) at yours, or run the team in this process with --local."
        )


def error_for(response: httpx.Response) -> ApiError:
    try:
        problem: dict[str, Any] = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code") or f"http_{response.status_code}")
    message = f"{problem.get('detail') or problem.get('title') or response.reason_phrase} ({code})"
    for error in problem.get("errors") or []:
        where = ".".join(str(p) for p in error.get("loc", []))
        message += f"\n  {where}: {error.get('msg', '')}"
    return ApiError(response.status_code, code, message)


def check(response: httpx.Response) -> Any:
    """The JSON body of a successful response; an ``ApiError`` otherwise."""
    if response.is_error:
        raise error_for(response)
    return response.json() if response.content else None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def sync_client(url: str, api_key: str | None) -> httpx.Client:
    return httpx.Client(base_url=url, headers=_headers(api_key), timeout=30)


class Api:
    """The calls ``swarmdirector run`` makes, over one async connection pool."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url
        # no read timeout: a stream is quiet while a model thinks (the server's pings keep it open)
        self.http = httpx.AsyncClient(base_url=url, headers=_headers(api_key), timeout=httpx.Timeout(30, read=None))

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.url) from exc
        return check(response)

    async def events(self, run_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
        """The run's SSE frames after seq ``after``, until the server ends the stream."""
        headers = {"Last-Event-ID": str(after)}
        async with aconnect_sse(self.http, "GET", f"/v1/runs/{run_id}/events", headers=headers) as source:
            if source.response.is_error:
                await source.response.aread()
                raise error_for(source.response)
            async for sse in source.aiter_sse():
                yield sse
