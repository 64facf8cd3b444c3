"""docker/nginx.conf, loaded by a real nginx and put in front of a real server.

The compose file's load balancer, minus Docker: the same file with the upstream ``api:8000``
pointed at a `swarmdirector serve` on a loopback port and the listen port moved to a free one.
Through it an SSE stream must arrive live (its first token long before its last), the WebSocket
upgrade must go through, and a body the API refuses must get the API's own problem, not nginx's.
Without an nginx (none installed and Debian's package not to be had) it skips, or fails under
``SWARM_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.deploy.tools import nginx_binary
from tests.fixtures.process import free_port, spawn_serve, stop_processes, wait_until_up
from tests.fixtures.services import service_unusable
from tests.fixtures.specs import team

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = ROOT / "docker" / "nginx.conf"
TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


@pytest.fixture(scope="module")
def nginx() -> Path:
    binary, why = nginx_binary()
    if binary is None:
        service_unusable(why)
    return binary


def local_conf(api_port: int, lb_port: int) -> str:
    """docker/nginx.conf with its two Docker-specific addresses moved to loopback ports."""
    text = NGINX_CONF.read_text()
    assert len(re.findall(r"^\s*listen 8080;", text, re.M)) == 1
    assert text.count("http://api:8000") == 1
    return text.replace("listen 8080;", f"listen 127.0.0.1:{lb_port};").replace(
        "http://api:8000", f"http://127.0.0.1:{api_port}"
    )


def main_conf(prefix: Path, include: Path) -> str:
    """What the nginx image's own nginx.conf does around conf.d/, with every path under ``prefix``."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {include};
}}
"""


@pytest.fixture
async def lb(nginx: Path, tmp_path: Path) -> AsyncIterator[str]:
    """A server (embedded SQLite) behind nginx with docker/nginx.conf; the URL of nginx."""
    api_port, lb_port = free_port(), free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    (prefix / "default.conf").write_text(local_conf(api_port, lb_port))
    (prefix / "nginx.conf").write_text(main_conf(prefix, prefix / "default.conf"))
    command = [str(nginx), "-p", str(prefix), "-c", str(prefix / "nginx.conf")]

    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, f"nginx refused docker/nginx.conf:\n{checked.stderr}"

    server = spawn_serve(api_port, f"sqlite+aiosqlite:///{tmp_path / 'swarm.db'}", SWARM_ENVIRONMENT="test")
    proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:
            await wait_until_up(client, server)
        url = f"http://127.0.0.1:{lb_port}"
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(100):
                assert proxy.poll() is None, proxy.stderr.read().decode() if proxy.stderr else ""
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("nginx did not proxy /readyz")
        yield url
    finally:
        stop_processes([proxy, server])


def test_the_conf_streams_unbuffered_and_upgrades() -> None:
    """What a proxy in front of SSE and WebSocket needs (docs/deployment.md), present in the file."""
    text = NGINX_CONF.read_text()
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_cache off;",
        "gzip off;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ):
        assert directive in text, directive
    read_timeout = re.search(r"proxy_read_timeout (\d+)([smh]);", text)
    assert read_timeout
    seconds = int(read_timeout.group(1)) * {"s": 1, "m": 60, "h": 3600}[read_timeout.group(2)]
    assert seconds >= 600, "idle reads must outlast a model that thinks (pings come every 15 s)"


async def test_sse_arrives_live_through_the_proxy(lb: str) -> None:
    # two replies of 20 tokens, 50 ms each: about two seconds from the first token to the end
    body = {"team": team(model="fake/t20-d50", max_messages=3), "task": "Count slowly."}
    arrivals: list[tuple[float, str]] = []
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("POST", f"{lb}/v1/runs/stream", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                arrivals.append((time.monotonic(), line.removeprefix("event: ")))
                if arrivals[-1][1] in TERMINAL:
                    break
    kinds = [kind for _, kind in arrivals]
    assert kinds[-1] == "run.completed", kinds
    first_delta = next(at for at, kind in arrivals if kind == "message.delta")
    assert arrivals[-1][0] - first_delta > 1.0, "the frames came all at once: something buffered the stream"
    assert kinds.count("message.delta") >= 40


async def test_websocket_upgrades_through_the_proxy(lb: str) -> None:
    frames: list[dict[str, Any]] = []
    async with connect(lb.replace("http://", "ws://") + "/v1/ws", open_timeout=10) as socket:
        await socket.send(json.dumps({"type": "ping", "id": "p"}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == {"type": "pong", "id": "p"}
        await socket.send(json.dumps({"type": "run.start", "id": "1", "team_id": "demo", "task": "A haiku."}))
        while not frames or frames[-1].get("type") not in TERMINAL:
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), 30)))
    assert frames[0]["type"] == "ack" and frames[-1]["type"] == "run.completed"


async def test_a_large_body_gets_the_api_s_problem_and_a_fitting_one_reaches_the_api(lb: str) -> None:
    """Over SWARM_MAX_BODY_BYTES: nginx refuses it with the API's problem (the API, refusing before
    reading, would reset the connection nginx writes to: a 502). Within it: the API answers."""
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(5):  # the 502 was a race: it must never happen
            response = await client.post(
                f"{lb}/v1/runs",
                content=json.dumps({"team_id": "demo", "task": "x" * 1_100_000}),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 413, response.text[:300]
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["code"] == "payload_too_large" and problem["status"] == 413
            assert problem["type"].endswith("/payload_too_large") and problem["detail"]

        fitting = await client.post(f"{lb}/v1/runs", json={"team_id": "demo", "task": "x" * 1_000_000})
    # through to the API, whose own limit on a task's length answers
    assert fitting.status_code == 422 and fitting.headers["content-type"].startswith("application/problem+json")


def test_nginx_and_the_api_agree_on_the_body_limit() -> None:
    from app.core.settings import Settings

    text = NGINX_CONF.read_text()
    limit = re.search(r"client_max_body_size (\d+)m;", text)
    assert limit and int(limit.group(1)) * 1024 * 1024 == Settings.model_fields["max_body_bytes"].default
    assert f"exceeds {Settings.model_fields['max_body_bytes'].default} bytes" in text
