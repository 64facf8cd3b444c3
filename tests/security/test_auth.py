"""API keys and when they are required: the CLI, the open/closed rules, HTTP, SSE and WebSocket."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from sqlalchemy import event, text, update
from typer.testing import CliRunner

from app.auth.middleware import take_query_token
from app.auth.models import ApiKey
from app.auth.service import hash_key, is_loopback, why_auth_required
from app.cli import cli
from app.core.db import utcnow
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import Backend, LiveServer, asgi_client, make_settings, services_of, started
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_problem
from tests.fixtures.specs import run_body, team


@pytest.fixture
async def closed_app(backend: Backend, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """An app that listens beyond loopback: keys are required before any exists."""
    app = create_app(backend.settings(tmp_path, host="0.0.0.0"))
    async with started(app):
        yield app


def cli_keys(db_url: str, *args: str) -> Any:
    env = {"SWARM_DATABASE_URL": db_url, "SWARM_LOG_LEVEL": "WARNING"}
    return CliRunner().invoke(cli, ["keys", *args], env=env)


# -- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_is_recognised(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_why_auth_is_required(tmp_path: Path) -> None:
    assert why_auth_required(make_settings(tmp_path)) is None
    assert "beyond loopback" in (why_auth_required(make_settings(tmp_path, host="0.0.0.0")) or "")
    assert "SWARM_AUTH_REQUIRED" in (why_auth_required(make_settings(tmp_path, auth_required=True)) or "")
    production = make_settings(tmp_path, environment="production", default_model="openai/gpt-4o-mini")
    assert "production" in (why_auth_required(production) or "")


async def test_open_on_loopback_until_a_key_exists_then_closed_for_good(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/v1/runs")).status_code == 200  # open: the local principal
    alice = await api_key_headers(app, "alice")
    assert_problem(await client.get("/v1/runs"), 401, "unauthorized")
    assert (await client.get("/v1/runs", headers=alice)).status_code == 200
    # revoking every key does not reopen the server
    async with services_of(app).sessionmaker() as session:
        await session.execute(update(ApiKey).values(revoked_at=utcnow()))
        await session.commit()
    assert_problem(await client.get("/v1/runs", headers=alice), 401, "unauthorized")
    assert_problem(await client.get("/v1/runs"), 401, "unauthorized")


async def test_requests_that_arrive_together_share_their_key_reads(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A burst does not make one read per request (see app/core/coalesce.py for why it stays exact)."""
    reads: list[str] = []
    database = services_of(app).database

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM api_keys" in statement:
            reads.append(statement)

    event.listen(database.read_engine.sync_engine, "before_cursor_execute", record)
    try:
        burst = await asyncio.gather(*(client.get("/v1/runs") for _ in range(40)))
        assert [r.status_code for r in burst] == [200] * 40
        assert 1 <= len(reads) <= 5, f"{len(reads)} reads of api_keys for 40 requests"
        alice = await api_key_headers(app, "alice")
        reads.clear()
        burst = await asyncio.gather(*(client.get("/v1/runs", headers=alice) for _ in range(40)))
        assert [r.status_code for r in burst] == [200] * 40
        assert 1 <= len(reads) <= 5, f"{len(reads)} reads of api_keys for 40 requests"
        # and a request after the key exists is never answered by a read from before
        assert_problem(await client.get("/v1/runs"), 401, "unauthorized")
    finally:
        event.remove(database.read_engine.sync_engine, "before_cursor_execute", record)


async def test_beyond_loopback_every_v1_route_needs_a_key_and_ops_routes_do_not(closed_app: FastAPI) -> None:
    async with asgi_client(closed_app) as client:
        for method, path in [
            ("GET", "/v1/runs"),
            ("GET", "/v1/models"),
            ("GET", "/v1/teams/demo"),
            ("POST", "/v1/runs"),
            ("GET", "/v1/runs/run_x/events"),
            ("GET", "/v1/conversations"),
            ("GET", "/v1/no-such-route"),
        ]:
            r = await client.request(method, path, json=run_body() if method == "POST" else None)
            body = assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            assert "keys create" in body["detail"]
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


@pytest.mark.parametrize(
    "authorization",
    ["Bearer sd_not-a-key", "Bearer ", "Basic dXNlcjpwYXNz", "sd_no_scheme", "Bearer " + "x" * 5000],
)
async def test_a_bad_key_is_401_even_on_an_open_server(client: httpx.AsyncClient, authorization: str) -> None:
    r = await client.get("/v1/runs", headers={"authorization": authorization})
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_keys_are_stored_hashed(app: FastAPI) -> None:
    headers = await api_key_headers(app, "alice")
    secret = headers["authorization"].removeprefix("Bearer ")
    async with services_of(app).read_sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    dump = repr(rows)
    assert secret not in dump
    assert hash_key(secret) in dump


async def test_start_up_says_whether_the_server_is_open(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with started(create_app(backend.settings(tmp_path / "a", log_level="INFO"))):
        pass
    out = capfd.readouterr().err
    assert "auth_open" in out and "auth_required" not in out
    async with started(create_app(backend.settings(tmp_path / "b", log_level="INFO", host="0.0.0.0"))):
        pass
    out = capfd.readouterr().err
    assert "auth_required" in out and "beyond loopback" in out and "auth_open" not in out


# -- the CLI against a running server ------------------------------------------------------------


def test_keys_create_list_revoke_with_a_running_server(backend: Backend, tmp_path: Path) -> None:
    settings = backend.settings(tmp_path)
    created = cli_keys(settings.database_url, "create", "--name", "ci bot")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("sd_") and len(secret) >= 40 and "\n" not in secret
    assert "only this once" in created.stderr
    found = re.search(r"Created API key (key_\w+)", created.stderr)
    assert found, created.stderr
    key_id = found.group(1)

    listed = cli_keys(settings.database_url, "list")
    assert listed.exit_code == 0
    assert key_id in listed.stdout and "ci bot" in listed.stdout and "active" in listed.stdout
    assert secret not in listed.output and secret[:11] in listed.stdout

    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        headers = {"authorization": f"Bearer {secret}"}
        assert client.get("/v1/runs").status_code == 401
        r = client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t4")), headers=headers)
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
        # the key acts as `local`, so what the open server made is still reachable
        assert client.get("/v1/teams/demo", headers=headers).status_code == 200

        revoked = cli_keys(settings.database_url, "revoke", key_id)
        assert revoked.exit_code == 0 and "Revoked" in revoked.stdout
        # at once, without a restart
        assert_problem(client.get("/v1/runs", headers=headers), 401, "unauthorized")
    again = cli_keys(settings.database_url, "revoke", key_id)
    assert again.exit_code == 0 and "already revoked" in again.stdout
    assert "revoked" in cli_keys(settings.database_url, "list").stdout
    unknown = cli_keys(settings.database_url, "revoke", "key_nope")
    assert unknown.exit_code == 1 and "No API key" in unknown.stderr


def test_keys_create_refuses_a_bad_principal_or_name(backend: Backend, tmp_path: Path) -> None:
    url = backend.settings(tmp_path).database_url
    assert cli_keys(url, "create", "--name", "x", "--principal", "a b").exit_code == 2
    assert cli_keys(url, "create", "--name", "  ").exit_code == 2
    assert "No API keys" in cli_keys(url, "list").stderr


# -- WebSocket -----------------------------------------------------------------------------------


async def _ws_status(url: str, **kwargs: Any) -> int:
    try:
        async with websockets.connect(url, **kwargs) as ws:
            await ws.send('{"type": "ping", "id": "p"}')
            await asyncio.wait_for(ws.recv(), 10)
            return 101
    except websockets.InvalidStatus as exc:
        return int(exc.response.status_code)


async def test_the_socket_is_authenticated_before_it_is_accepted(
    backend: Backend, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = backend.settings(tmp_path, host="0.0.0.0", log_level="INFO")
    with LiveServer(settings) as server:
        uvicorn_log = logging.getLogger("uvicorn.error")
        level = uvicorn_log.level
        uvicorn_log.setLevel(logging.INFO)  # uvicorn logs every socket's path and query at INFO
        try:
            ws_url = server.url.replace("http://", "ws://") + "/v1/ws"
            assert await _ws_status(ws_url) == 401
            assert await _ws_status(ws_url, additional_headers={"authorization": "Bearer sd_wrong"}) == 401
            created = await asyncio.to_thread(cli_keys, settings.database_url, "create", "--name", "ws")
            secret = created.stdout.strip()
            headers = {"authorization": f"Bearer {secret}"}
            assert await _ws_status(ws_url, additional_headers=headers) == 101
            assert await _ws_status(f"{ws_url}?access_token={secret}") == 101
            assert await _ws_status(f"{ws_url}?access_token=sd_wrong") == 401
        finally:
            uvicorn_log.setLevel(level)
    # the query form never reaches a log line
    logged = capfd.readouterr().err
    assert '"WebSocket /v1/ws' in logged
    assert secret not in logged and "sd_wrong" not in logged


# -- a key in the query string (browsers' EventSource and WebSocket) ----------------------------


@pytest.mark.parametrize(
    ("query", "left", "token"),
    [(b"access_token=sd_k", b"", "sd_k"),
     (b"after=3&access_token=sd_k&limit=5", b"after=3&limit=5", "sd_k"),
     (b"access%5Ftoken=sd_k&q=caf%C3%A9+x&flag", b"q=caf%C3%A9+x&flag", "sd_k"),  # the rest as sent, byte for byte
     (b"access_token=sd_a&access_token=sd_b", b"", "sd_b"),
     (b"access_token=&after=1", b"after=1", None),
     (b"after=3&x=%41", b"after=3&x=%41", None),
     (b"", b"", None)],
)  # fmt: skip
def test_the_key_is_taken_out_of_the_query_string(query: bytes, left: bytes, token: str | None) -> None:
    scope: dict[str, Any] = {"type": "http", "query_string": query}
    assert take_query_token(scope) == token
    assert scope["query_string"] == left
    assert take_query_token(scope) == token  # ApiAuth, after QueryKey took it


async def test_a_key_in_the_query_string_authenticates_http_and_sse(closed_app: FastAPI) -> None:
    alice = await api_key_headers(closed_app, "alice")
    key = alice["authorization"].removeprefix("Bearer ")
    async with asgi_client(closed_app) as client:
        r = await client.post(f"/v1/runs/wait?access_token={key}", json=run_body(team=team(model="fake/t3")))
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        run_id = r.json()["id"]
        stream = await client.get(f"/v1/runs/{run_id}/events?access_token={key}")  # what EventSource sends
        assert stream.status_code == 200 and "event: run.completed" in stream.text
        # the other parameters are read as sent
        page = await client.get(
            f"/v1/runs/{run_id}/events?after=1&access_token={key}&limit=2", headers={"accept": "application/json"}
        )
        assert [e["seq"] for e in page.json()["data"]] == [2, 3]
        # a wrong key is checked like a header's, and the header wins over the query
        assert_problem(await client.get("/v1/runs?access_token=sd_wrong"), 401, "unauthorized")
        assert (await client.get("/v1/runs?access_token=sd_wrong", headers=alice)).status_code == 200
        # another principal's key in the query sees nothing of alice's
        bob = (await api_key_headers(closed_app, "bob"))["authorization"].removeprefix("Bearer ")
        assert_problem(await client.get(f"/v1/runs/{run_id}?access_token={bob}"), 404, "not_found")


def test_settings_field_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_AUTH_REQUIRED", "true")
    assert Settings(_env_file=None).auth_required is True  # type: ignore[call-arg]
