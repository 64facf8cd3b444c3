"""Every example of docs/streaming.md, run as written against a real server (only the address changes)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.docs.examples import Example, examples
from tests.fixtures.browser import CHROMIUM, HEADLESS, MISSING
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

EXAMPLES = examples("streaming.md")
TESTED = {  # each name is run by at least one test below
    "curl-stream",
    "curl-resume",
    "curl-page",
    "eventsource",
    "httpx-sse",
    "websockets",
    "websockets-resume",
}


def test_every_example_has_a_test() -> None:
    assert set(EXAMPLES) == TESTED


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path, default_model="fake/t12-d2")) as live:
        yield live


def run_example(
    example: Example, server: LiveServer, tmp_path: Path, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> str:
    code = example.against(server.url)
    if example.language == "sh":
        if shutil.which("curl") is None:
            pytest.skip("the curl examples need curl")
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        assert example.language == "python", example.language
        script = tmp_path / f"example_{example.name.replace('-', '_')}.py"  # never a package's name
        script.write_text(code)
        command = [sys.executable, str(script), *args]
    done = subprocess.run(
        command, input=stdin, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def sse_frames(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "data" in fields:
            frames.append(fields)
    return frames


def finished_run(server: LiveServer) -> dict[str, Any]:
    body = {"team": team(model="fake/t12", max_messages=3), "task": "Write a haiku about rivers."}
    run = httpx.post(f"{server.url}/v1/runs/wait", json=body, timeout=60).json()
    assert run["status"] == "succeeded", run
    return dict(run)


def stored_events(server: LiveServer, run_id: str) -> list[dict[str, Any]]:
    return stored_events_at(server.url, run_id)


def stored_events_at(url: str, run_id: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/v1/runs/{run_id}/events", headers={"accept": "application/json"}).json()
    return list(page["data"])


def test_curl_streams_a_new_run(server: LiveServer, tmp_path: Path) -> None:
    frames = sse_frames(run_example(EXAMPLES["curl-stream"], server, tmp_path))
    events = [json.loads(f["data"]) for f in frames]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [f["id"] for f in frames] == [str(e["seq"]) for e in events]
    assert [f["event"] for f in frames] == [e["type"] for e in events]
    assert events[0]["type"] == "run.queued" and events[-1]["type"] == "run.completed"
    streamed: dict[str, str] = defaultdict(str)
    for e in events:
        if e["type"] == "message.delta":
            streamed[e["data"]["message_id"]] += e["data"]["text"]
    completed = {e["data"]["message_id"]: e["data"]["text"] for e in events if e["type"] == "message.completed"}
    assert streamed and all(completed[k] == v for k, v in streamed.items())
    assert {e["data"]["agent"] for e in events if e["type"] == "message.delta"} == {"writer", "critic"}


def test_curl_follows_and_resumes(server: LiveServer, tmp_path: Path) -> None:
    run = finished_run(server)
    frames = sse_frames(run_example(EXAMPLES["curl-resume"], server, tmp_path, env={"RUN": run["id"]}))
    last = run["last_seq"]
    assert [int(f["id"]) for f in frames] == list(range(1, last + 1)) + list(range(6, last + 1))


def test_curl_reads_the_log_as_json(server: LiveServer, tmp_path: Path) -> None:
    run = finished_run(server)
    page = json.loads(run_example(EXAMPLES["curl-page"], server, tmp_path, env={"RUN": run["id"]}))
    assert [e["seq"] for e in page["data"]] == list(range(1, run["last_seq"] + 1))
    assert page["has_more"] is False


def test_httpx_sse_follows_a_run_to_its_end(server: LiveServer, tmp_path: Path) -> None:
    out = run_example(EXAMPLES["httpx-sse"], server, tmp_path)
    run_id = out.splitlines()[0].removeprefix("run ")
    assert out.rstrip().endswith("run.completed: succeeded")
    replies = [e["data"] for e in stored_events(server, run_id) if e["type"] == "message.completed"][1:]
    assert [r["agent"] for r in replies] == ["writer", "critic", "writer", "critic"]  # the demo team
    for i, reply in enumerate(replies):
        # the deltas, printed as they came, then the agent's line (the first reply's first word may
        # stream before the task's message.completed, so it is left out of the comparison)
        text = reply["text"] if i else reply["text"].split(" ", 1)[1]
        assert f"{text}\n[{reply['agent']}] {len(reply['text'])} characters" in out


def test_httpx_sse_resumes_across_a_server_restart(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'swarm.db'}",
        "SWARM_DEFAULT_MODEL": "fake/t400-d10",  # four seconds a message: the restart comes mid-message
        "SWARM_SHUTDOWN_GRACE_S": "0.2",
        "SWARM_LOG_LEVEL": "ERROR",
    }

    def serve() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # a bound, not a timing assumption
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    return server
            time.sleep(0.05)
        server.kill()
        raise AssertionError("the server did not come up")

    script = tmp_path / "example_httpx_sse.py"
    script.write_text(EXAMPLES["httpx-sse"].against(url))
    first = serve()
    example = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert example.stdout is not None
        run_id = example.stdout.readline().strip().removeprefix("run ")
        deadline = time.monotonic() + 60
        while not any(e["type"] == "message.delta" for e in stored_events_at(url, run_id)):
            assert time.monotonic() < deadline, "no delta was stored"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # the stream ends with stream.closing; the run is cancelled
        first.wait(timeout=60)  # uvicorn re-raises the signal once it has stopped cleanly
        second = serve()
        out, _ = example.communicate(timeout=120)
    finally:
        if example.poll() is None:
            example.kill()
            example.communicate()
        for server in (first, second):
            if server is not None and server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)
    assert example.returncode == 0
    assert out.rstrip().endswith("run.cancelled: cancelled"), out[-300:]
    # (not "Fake reply ...": the run may stream its first word before the task's message.completed)
    assert out.count("reply 1 after 2 messages") == 1, "nothing was printed twice after the resume"


def test_websockets_runs_a_team_and_answers_its_question(server: LiveServer, tmp_path: Path) -> None:
    members = [agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}]
    created = httpx.post(f"{server.url}/v1/teams", json=team("asking", members=members, max_messages=4))
    assert created.status_code == 201, created.text
    out = run_example(EXAMPLES["websockets"], server, tmp_path, "asking", "Plan a picnic.", stdin="Bring lemonade.\n")
    run_id = out.splitlines()[0].removeprefix("run ")
    assert "human asks: " in out
    assert "run.completed at seq" in out
    run = httpx.get(f"{server.url}/v1/runs/{run_id}").json()
    messages = httpx.get(f"{server.url}/v1/conversations/{run['conversation_id']}/messages").json()["data"]
    assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"]
    assert messages[2]["text"] == "Bring lemonade."


def test_websockets_resumes_after_a_seq(server: LiveServer, tmp_path: Path) -> None:
    run = finished_run(server)
    out = run_example(EXAMPLES["websockets-resume"], server, tmp_path, run["id"], "5")
    expected = [f"{e['seq']} {e['type']}" for e in stored_events(server, run["id"])[5:]]
    assert out.splitlines() == expected


@pytest.mark.skipif(not CHROMIUM.exists(), reason=MISSING)
async def test_eventsource_follows_and_resumes_after_a_reload(server: LiveServer) -> None:
    from playwright.async_api import async_playwright

    body = {"team": team(model="fake/t30-d5", max_messages=3), "task": "Write a haiku about rivers."}
    run_id = httpx.post(f"{server.url}/v1/runs", json=body).json()["id"]
    snippet = EXAMPLES["eventsource"].against(server.url)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=HEADLESS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(server.url + "/healthz")
            await page.add_script_tag(content=snippet)
            # the page sees five events, then goes away mid-run (the source is closed, the page reloaded)
            first = await page.evaluate(
                """(runId) => new Promise((resolve) => {
                    const seen = [];
                    followRun(runId, { onEvent: (e, source) => {
                        seen.push(e.seq);
                        if (seen.length === 5) { source.close(); resolve(seen); }
                    } });
                })""",
                run_id,
            )
            await page.reload()
            await page.add_script_tag(content=snippet)
            rest = await page.evaluate(
                """(runId) => new Promise((resolve) => {
                    const seen = [];
                    followRun(runId, { onEvent: (e) => seen.push([e.seq, e.type]), onEnd: () => resolve(seen) });
                })""",
                run_id,
            )
            assert errors == []
        finally:
            await browser.close()
    stored = stored_events(server, run_id)
    assert first == [1, 2, 3, 4, 5]
    assert rest == [[e["seq"], e["type"]] for e in stored[5:]]
    assert rest[-1][1] == "run.completed"
