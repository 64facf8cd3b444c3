"""A web page of another site cannot drive the server (issue 25): the Host and Origin checks.

On a real uvicorn: a socket from a foreign ``Origin`` is refused before it is accepted, a request
whose ``Host`` names another site (DNS rebinding) gets no data from an open server, and the
clients that are no foreign page (the server's own page, curl-like programs, an allowed origin)
still work, keyed or not.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from pydantic import ValidationError

from app.core.settings import Settings
from tests.conftest import LiveServer, make_settings, serve_app
from tests.fixtures.problems import PROBLEM_BASE, assert_problem
from tests.fixtures.specs import run_body, team
from tests.security.conftest import create_key_async

EVIL = "http://evil.example"
ALLOWED_HOST = "swarm.internal"
ALLOWED_ORIGIN = "https://app.example"


def open_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """A server on loopback with no key: open, as `make run` starts it."""
    return make_settings(tmp_path, allowed_hosts=[ALLOWED_HOST], allowed_origins=[ALLOWED_ORIGIN], **overrides)


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(open_settings(tmp_path)) as server:
        yield server


async def ws_status(url: str, **headers: str) -> tuple[int, str]:
    """The handshake's status (101 once a frame went both ways), and the refusal's body."""
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
            await ws.send('{"type": "ping", "id": "p"}')
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"
            return 101, ""
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode() if exc.response.body else ""


def ws_url(server: LiveServer, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/v1/ws" + query


# -- Origin --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", "http://127.0.0.1", "http://127.0.0.1:1", "http://evil.example:{port}", "https://app.example:444",
     "chrome-extension://abcdef", "not an origin"],
)  # fmt: skip
async def test_a_socket_from_a_foreign_origin_is_refused_before_it_is_accepted(
    open_server: LiveServer, origin: str
) -> None:
    status, body = await ws_status(ws_url(open_server), origin=origin.format(port=open_server.port))
    assert status == 403
    problem = json.loads(body)
    assert problem["code"] == "forbidden_origin" and problem["type"] == PROBLEM_BASE + "forbidden_origin"
    assert "SWARM_ALLOWED_ORIGINS" in problem["detail"]


async def test_a_socket_from_the_servers_own_page_an_allowed_origin_or_no_browser_is_accepted(
    open_server: LiveServer,
) -> None:
    own = open_server.url  # the chat page's origin: http://127.0.0.1:<port>
    assert await ws_status(ws_url(open_server), origin=own) == (101, "")
    assert await ws_status(ws_url(open_server), origin=own.upper()) == (101, "")
    assert await ws_status(ws_url(open_server), origin=ALLOWED_ORIGIN) == (101, "")
    assert await ws_status(ws_url(open_server)) == (101, "")  # curl, the CLI, programs: no Origin
    # the page reached as localhost is its own origin too, when it opens the socket on localhost
    localhost = f"http://localhost:{open_server.port}"
    assert await ws_status(ws_url(open_server), origin=localhost, host=f"localhost:{open_server.port}") == (101, "")


async def test_a_foreign_page_cannot_start_runs_over_http_either(open_server: LiveServer) -> None:
    """A simple cross-site POST (a form, `fetch` with `no-cors`) is refused and starts nothing."""
    async with open_server.client() as client:
        refused = await client.post("/v1/runs", json=run_body(), headers={"origin": EVIL})
        assert_problem(refused, 403, "forbidden_origin")
        plain = await client.post(
            "/v1/runs", content=json.dumps(run_body()), headers={"origin": EVIL, "content-type": "text/plain"}
        )
        assert_problem(plain, 403, "forbidden_origin")
        assert (await client.get("/v1/runs")).json()["data"] == []
        # the server's own page, and a program, do start runs
        own = await client.post(
            "/v1/runs/wait", json=run_body(team=team(model="fake/t3")), headers={"origin": open_server.url}
        )
        assert own.status_code == 200 and own.json()["status"] == "succeeded", own.text
        assert (await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t3")))).status_code == 200
        assert len((await client.get("/v1/runs")).json()["data"]) == 2
        # the protocol views are guarded as /v1 is
        chat = {"model": "demo", "messages": [{"role": "user", "content": "Spend the budget."}]}
        simple = {"origin": EVIL, "content-type": "text/plain"}
        dialect = await client.post("/openai/v1/chat/completions", content=json.dumps(chat), headers=simple)
        # in the dialect's own error shape, as every error under /openai/v1
        assert dialect.status_code == 403 and dialect.json()["error"]["code"] == "forbidden_origin", dialect.text
        assert (await client.get("/openai/v1/models", headers={"origin": EVIL})).status_code == 403
        assert (await client.get("/agui/teams/demo/health", headers={"origin": EVIL})).status_code == 403
        assert len((await client.get("/v1/runs")).json()["data"]) == 2
        # outside the API (the chat page, its files, the probes) there is nothing to protect: no check
        assert (await client.get("/", headers={"origin": EVIL})).status_code == 200


# -- Host ----------------------------------------------------------------------------------------


async def test_dns_rebinding_reads_no_conversation_from_an_open_server(open_server: LiveServer) -> None:
    async with open_server.client() as client:
        run = (await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t3")))).json()
        conversation = run["conversation_id"]
        listed = await client.get("/v1/conversations")
        assert listed.status_code == 200 and conversation in listed.text  # so the refusal below can fail

        for host in ("attacker.example", f"attacker.example:{open_server.port}"):
            r = await client.get("/v1/conversations", headers={"host": host})
            body = assert_problem(r, 400, "invalid_host")
            assert "SWARM_ALLOWED_HOSTS" in body["detail"] and conversation not in r.text
            r = await client.get(f"/v1/conversations/{conversation}/messages", headers={"host": host})
            assert_problem(r, 400, "invalid_host")
            # every route of an open server, the chat page included, and the socket
            assert (await client.get("/", headers={"host": host})).status_code == 400
            assert (await client.get("/metrics", headers={"host": host})).status_code == 400
    status, body = await ws_status(ws_url(open_server), host="attacker.example")
    assert status == 400 and json.loads(body)["code"] == "invalid_host"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.0.0.1:8000", True), ("localhost:8000", True), ("LocalHost", True),
     ("[::1]:8000", True), ("[::1]", True), ("127.1.2.3", True), (ALLOWED_HOST, True), (f"{ALLOWED_HOST}:443", True),
     ("attacker.example", False), ("127.0.0.1.attacker.example", False), ("localhost.attacker.example", False),
     ("127.0.0.1@attacker.example", False), ("attacker.example#@127.0.0.1", False), ("localhost.", False),
     (f"x.{ALLOWED_HOST}", False), ("192.168.1.5", False), ("[::1", False), ("localhost:port", False), ("", False)],
)  # fmt: skip
async def test_which_hosts_name_an_open_server(tmp_path: Path, host: str, allowed: bool) -> None:
    async with serve_app(open_settings(tmp_path)) as (_, client):
        r = await client.get("/v1/teams/demo", headers={"host": host})
        if allowed:
            assert r.status_code == 200, r.text
        else:
            assert_problem(r, 400, "invalid_host")


async def test_a_server_that_requires_keys_answers_to_any_host_and_still_checks_origins(tmp_path: Path) -> None:
    """Beyond loopback (here: configured so, bound to loopback by the test) keys protect the data."""
    settings = make_settings(tmp_path, host="0.0.0.0")
    with LiveServer(settings) as server:
        key = (await create_key_async(settings.database_url, "alice"))["authorization"].removeprefix("Bearer ")
        async with server.client() as client:
            r = await client.get(
                "/v1/conversations", headers={"host": "swarm.example.org", "authorization": f"Bearer {key}"}
            )
            assert r.status_code == 200, r.text
            assert_problem(
                await client.get("/v1/conversations", headers={"host": "swarm.example.org"}), 401, "unauthorized"
            )
            # a key in the URL does not say which page sent it
            r = await client.get(f"/v1/conversations?access_token={key}", headers={"origin": EVIL})
            assert_problem(r, 403, "forbidden_origin")
        assert (await ws_status(ws_url(server, f"?access_token={key}"), origin=EVIL))[0] == 403
        assert await ws_status(ws_url(server, f"?access_token={key}"), origin=server.url) == (101, "")
        assert await ws_status(ws_url(server), authorization=f"Bearer {key}") == (101, "")


# -- the settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("allowed_origins", "app.example"), ("allowed_origins", "https://app.example/path"),
     ("allowed_origins", "ftp://app.example"), ("allowed_origins", "https://app.example:70000"),
     ("allowed_origins", "https://user@app.example"), ("allowed_origins", "*"),
     ("allowed_hosts", "https://swarm.internal"), ("allowed_hosts", "swarm.internal:8080"),
     ("allowed_hosts", "*.example.org"), ("allowed_hosts", "swarm.internal/x"), ("allowed_hosts", "")],
)  # fmt: skip
def test_a_malformed_allowed_host_or_origin_is_refused_at_start(
    field: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"SWARM_{field.upper()}", json.dumps(["localhost", value] if "host" in field else [value]))
    with pytest.raises(ValidationError, match=rf"{field}\n.*{re.escape(repr(value))} is not a"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_ALLOWED_HOSTS", '["swarm.internal"]')
    monkeypatch.setenv("SWARM_ALLOWED_ORIGINS", '["https://app.example", "http://localhost:5173"]')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allowed_hosts == ["swarm.internal"]
    assert settings.allowed_origins == ["https://app.example", "http://localhost:5173"]


async def test_an_allowed_origin_may_be_written_with_its_default_port(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allowed_origins=["HTTPS://App.Example:443/"])
    async with serve_app(settings) as (_, client):
        r = await client.post("/v1/runs", json=run_body(), headers={"origin": ALLOWED_ORIGIN})
        assert r.status_code == 202, r.text
