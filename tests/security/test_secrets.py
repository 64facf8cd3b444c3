"""Provider keys never appear in a response, a stored event, an exported spec, an error or a log line.

Tested by scanning everything a client and an operator can see while runs use every configured
provider, including one that echoes the credentials it was sent back in its error messages. API
keys sent in a query string (``?access_token=``, as browsers do) are scanned for the same way in
every log line of a real uvicorn, its access log included, whoever answers the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import Backend, LiveServer, make_settings, serve_app
from tests.faults.provider import SECRET_ECHO, FaultyProvider
from tests.fixtures.specs import agent, run_body, team
from tests.security.conftest import create_key_async

SECRETS = {
    "openai_api_key": "sk-proj-SECRETopenaiA1b2C3d4E5f6",
    "azure_openai_api_key": "SECRETazure0123456789abcdef",
    "openai_compatible_api_key": "SECRETcompatibleXyZ987",
}


async def test_no_secret_in_responses_events_exports_errors_or_logs(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    await scan_for_secrets(backend, tmp_path, capfd, echo_credentials=False)


async def test_no_secret_even_when_a_provider_echoes_it_in_an_error(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    await scan_for_secrets(backend, tmp_path, capfd, echo_credentials=True)


async def scan_for_secrets(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str], *, echo_credentials: bool
) -> None:
    async with FaultyProvider(echo_credentials=echo_credentials).running() as provider:
        settings = backend.settings(
            tmp_path,
            log_level="DEBUG",
            openai_base_url=provider.base_url,
            azure_openai_endpoint=provider.base_url.removesuffix("/v1"),
            openai_compatible_base_url=provider.base_url,
            model_timeout_s=5,
            model_max_retries=0,
            **SECRETS,
        )
        seen: list[str] = []
        async with serve_app(settings) as (_, client):

            async def get(path: str, **kwargs: object) -> httpx.Response:
                r = await client.get(path, **kwargs)  # type: ignore[arg-type]
                seen.append(r.text + repr(r.headers))
                return r

            for path in ("/v1/models", "/openapi.json", "/readyz", "/healthz"):
                assert (await get(path)).status_code == 200
            members = [
                agent("writer", "fake/t3"),
                agent("critic", "openai_compatible/err401"),
                agent("reviewer", "openai/err500"),
            ]
            made = await client.post("/v1/teams", json=team("leaky", members=members))
            assert made.status_code == 201, made.text
            seen.append(made.text)
            exported = await get(f"/v1/teams/{made.json()['id']}/component")
            assert exported.status_code == 200
            for model in ("openai_compatible/err401", "openai/err500", "azure_openai/err403"):
                body = run_body(team=team(members=[agent("writer", "fake/t3"), agent("critic", model)]))
                r = await client.post("/v1/runs/wait", json=body)
                seen.append(r.text)
                run = r.json()
                assert run["status"] == "failed", run
                assert run["error"]["message"], "the failure is explained"
                await get(f"/v1/runs/{run['id']}")
                await get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
                await get(f"/v1/runs/{run['id']}/events")
                await get(f"/v1/conversations/{run['conversation_id']}/messages")
            # the provider really was sent the keys (and echoed them), so the scan below can fail
            assert provider.requests >= 3
        logs = capfd.readouterr()
        everything = "\n".join([*seen, logs.out, logs.err])
        assert "run_failed" in everything  # the logs were captured
        assert (SECRET_ECHO in everything) is echo_credentials  # and the provider's words reached them
        assert_absent(everything, SECRETS)


def assert_absent(text: str, secrets: dict[str, str]) -> None:
    for name, secret in secrets.items():
        assert secret not in text, f"{name} leaked"
        assert secret[6:-4] not in text, f"part of {name} leaked"


@contextmanager
def server_logs(level: int = logging.INFO) -> Iterator[None]:
    """uvicorn's access log and its socket lines at ``level`` (INFO prints each request's path and
    query, as `make run` does). The tests' own WebSocket client, which logs its request line at
    DEBUG, is kept quiet: a client may log its own key; the server may not."""
    levels = {"uvicorn.access": level, "uvicorn.error": level, "websockets.client": logging.INFO}
    loggers = {logging.getLogger(name): logging.getLogger(name).level for name in levels}
    for logger in loggers:
        logger.setLevel(levels[logger.name])
    try:
        yield
    finally:
        for logger, previous in loggers.items():
            logger.setLevel(previous)


async def test_no_key_sent_in_a_query_string_reaches_a_log_line(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every way a key rides in a URL, answered by the route, the auth, the origin and host checks,
    the body limit, a 404 or a static file: uvicorn logs each request, and never the key."""
    settings = backend.settings(tmp_path, log_level="DEBUG", max_body_bytes=4096)
    keys = {"key": (await create_key_async(settings.database_url, "alice"))["authorization"].removeprefix("Bearer ")}
    keys["wrong key"] = "sd_WRONGkey0123456789abcdefghijklmnopqrstu"
    key = keys["key"]
    statuses: list[int] = []
    with LiveServer(settings) as server, server_logs():
        ws = server.url.replace("http://", "ws://") + "/v1/ws"
        async with server.client() as client:

            async def get(path: str, **headers: str) -> httpx.Response:
                r = await client.get(path, headers=headers)
                statuses.append(r.status_code)
                return r

            run = await client.post(f"/v1/runs/wait?access_token={key}", json=run_body(team=team(model="fake/t3")))
            assert run.status_code == 200, run.text
            run_id = run.json()["id"]
            assert "event: run.completed" in (await get(f"/v1/runs/{run_id}/events?access_token={key}")).text
            await get(f"/v1/runs/{run_id}/events?after=0&access_token={key}", accept="application/json")
            await get(f"/v1/runs?access%5Ftoken={key}")
            await get(f"/v1/runs?access_token={keys['wrong key']}")
            await get(f"/v1/runs?access_token={key}", origin="http://evil.example")
            await get(f"/v1/runs?access_token={key}", host="attacker.example")
            for path in ("/v1/no-such-route", "/healthz", "/", "/static/js/api.js"):
                await get(f"{path}?access_token={key}")
            big = await client.post(f"/v1/runs?access_token={key}", content=b"x" * 8192)
            statuses.append(big.status_code)
        async with websockets.connect(f"{ws}?access_token={key}") as socket:
            await socket.send('{"type": "ping", "id": "p"}')
            assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "pong"
        for refused in (f"{ws}?access_token={keys['wrong key']}", f"{ws}?access_token={key}"):
            origin = "http://evil.example" if key in refused else None
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(refused, origin=origin):  # type: ignore[arg-type]
                    pass
    # every kind of answer was given (so each path that could log the key was taken) ...
    assert {200, 401, 403, 400, 404, 413} <= set(statuses), statuses
    logged = capfd.readouterr().err
    # ... and logged, with the rest of its query
    for line in (f'"GET /v1/runs/{run_id}/events HTTP/1.1" 200', f'"GET /v1/runs/{run_id}/events?after=0 HTTP/1.1" 200',
                 '"GET /v1/runs HTTP/1.1" 401', '"GET /v1/runs HTTP/1.1" 403', '"GET /v1/runs HTTP/1.1" 400',
                 '"POST /v1/runs HTTP/1.1" 413', '"GET /healthz HTTP/1.1" 200', '"GET /static/js/api.js HTTP/1.1" 200',
                 '"WebSocket /v1/ws" [accepted]', '"WebSocket /v1/ws" 403', '"WebSocket /v1/ws" 401'):  # fmt: skip
        assert line in logged, f"{line} was not logged"
    assert_absent(logged, keys)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The root logger as it was: a server started at DEBUG leaves its handler on this test's captured
    stderr, which is closed after it (a later DEBUG record, asyncio's own, would write to it)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("root_logging")
async def test_no_key_of_a_socket_reaches_a_debug_log_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, log_level="DEBUG")
    key = (await create_key_async(settings.database_url, "alice"))["authorization"].removeprefix("Bearer ")
    with LiveServer(settings) as server, server_logs(logging.DEBUG):
        ws = server.url.replace("http://", "ws://") + "/v1/ws"
        for url, headers in ((f"{ws}?access_token={key}", {}), (ws, {"authorization": f"Bearer {key}"})):
            async with websockets.connect(url, additional_headers=headers) as socket:
                await socket.send('{"type": "ping", "id": "p"}')
                assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "pong"
    logged = capfd.readouterr().err
    assert '"WebSocket /v1/ws" [accepted]' in logged
    assert_absent(logged, {"key": key})
