"""AG-UI from its official client: ``@ag-ui/client``'s ``HttpAgent`` (Node) drives a team on a live server.

The client is installed by the test from ``node/package-lock.json`` (``npm ci`` from the npm
registry, into the tests' cache outside the repository, once per lock file); without Node, the test is
skipped with the reason. The script runs a team whose second member is a person: the
first run streams the helper's text and ends with an interrupt, the second resumes it and the team
finishes; the client's own message list is then the whole exchange, each message once (the
person's answer too, as the message of its user-proxy agent). A second script, ``reconnect.mjs``, cuts
the client's stream mid-message and reconnects with ``GET .../runs/{runId}``: its messages are still
the stored conversation, each once.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.toolchain import npm_project
from tests.conftest import LiveServer, make_settings, serve_app
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).with_name("node")


def _require_client() -> tuple[str, Path]:
    """Node, and the folder where ``drive.mjs`` runs with ``@ag-ui/client`` installed."""
    folder = npm_project(NODE_DIR)
    node = shutil.which("node")
    assert node is not None
    return node, folder


async def test_the_official_client_streams_two_agents_and_resumes_an_interrupt(tmp_path: Path) -> None:
    node, folder = _require_client()
    settings = make_settings(tmp_path)
    asking = team("asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}])
    async with serve_app(settings) as (_, client):
        assert (await client.post("/v1/teams", json={**asking, "termination": {"max_messages": 4}})).status_code == 201
    with LiveServer(settings) as server:
        done = await asyncio.to_thread(
            subprocess.run,
            [node, str(folder / "drive.mjs"), f"{server.url}/agui/teams/asking", "thread-node"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        async with server.client() as c:
            stored = (await c.get("/v1/conversations/thread-node/messages")).json()["data"]
    first, second = seen["first"], seen["second"]
    assert first[0][0] == "RUN_STARTED" and first[-1] == ["RUN_FINISHED", None, None, "interrupt"]
    assert ["SUBAGENT_STARTED", "helper", None, None] in first
    assert any(kind == "TEXT_MESSAGE_CONTENT" for kind, *_ in first)
    assert second[-1] == ["RUN_FINISHED", None, None, "success"]
    assert [e[1] for e in second if e[0] == "SUBAGENT_STARTED"] == ["human", "helper"]
    # the client's messages: the task, then each agent's message once, as the server stored them
    said = [(m["agent"], m["text"]) for m in stored if m["agent"] != "user"]
    assert [name for name, _ in said] == ["helper", "human", "helper"]
    assert [(name, text) for role, name, text in seen["messages"] if role == "assistant"] == said


async def test_the_official_client_reconnects_after_a_dropped_stream_with_each_message_once(tmp_path: Path) -> None:
    node, folder = _require_client()
    settings = make_settings(tmp_path)
    # the helper streams slowly (forty words, 50 ms apart), so the client's cut comes mid-message
    slow = team("slow", members=[agent("helper", "fake/t40-d50"), {"name": "human", "kind": "user_proxy"}])
    async with serve_app(settings) as (_, client):
        assert (await client.post("/v1/teams", json={**slow, "termination": {"max_messages": 4}})).status_code == 201
    with LiveServer(settings) as server:
        done = await asyncio.to_thread(
            subprocess.run,
            [node, str(folder / "reconnect.mjs"), f"{server.url}/agui/teams/slow", "thread-cut"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        async with server.client() as c:
            stored = (await c.get("/v1/conversations/thread-cut/messages")).json()["data"]
    cut, reconnected, resumed = seen["cut"], seen["reconnected"], seen["resumed"]
    # the first stream was cut inside the helper's message (the client reports its abort as RUN_ERROR):
    # the client held a part of the message, not its end
    kinds = [kind for kind, *_ in cut]
    assert kinds[-2:] == ["TEXT_MESSAGE_CONTENT", "RUN_ERROR"] and "TEXT_MESSAGE_END" not in kinds
    (_, role, partial) = seen["whenCut"][-1]
    helper_text = stored[1]["text"]
    assert role == "assistant" and helper_text.startswith(partial) and len(partial) < len(helper_text)
    # the reconnect: the thread so far as a snapshot, then the run on to its interrupt
    assert [kind for kind, *_ in reconnected[:2]] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
    assert reconnected[-1] == ["RUN_FINISHED", None, "interrupt"]
    assert resumed[-1] == ["RUN_FINISHED", None, "success"]
    # the client's messages are the stored conversation: each message once, whole, with its id
    assert [m["agent"] for m in stored] == ["user", "helper", "human", "helper"]
    assert [(mid, text) for mid, _, text in seen["messages"]] == [(m["id"], m["text"]) for m in stored]


async def test_the_official_client_rejects_a_run_refused_by_a_limit_with_its_status(tmp_path: Path) -> None:
    # a refusal before any run (here the start rate) is an HTTP status and a problem, not a stream:
    # HttpAgent's runAgent rejects with the status, and its onRunFailed subscribers hear of it
    node, folder = _require_client()
    settings = make_settings(tmp_path, max_runs_per_minute=1)
    async with serve_app(settings) as (_, client):
        assert (await client.post("/v1/teams", json=team("pair", max_messages=3))).status_code == 201
    with LiveServer(settings) as server:
        done = await asyncio.to_thread(
            subprocess.run,
            [node, str(folder / "refused.mjs"), f"{server.url}/agui/teams/pair", "thread-limit"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        async with server.client() as c:
            runs = (await c.get("/v1/runs")).json()["data"]
    assert seen["first"] == 2  # the writer's and the critic's messages
    assert seen["refused"]["status"] == 429 and seen["refused"]["code"] == "rate_limited"
    assert seen["refused"]["message"].startswith("HTTP 429: ")
    assert seen["failed"] == [429]
    assert len(runs) == 1


async def test_the_official_client_answers_a_tool_approval_with_an_edit(tmp_path: Path) -> None:
    node, folder = _require_client()
    settings = make_settings(tmp_path)
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}]
    clerk = agent("clerk", tools=["calculator"], approve_tools=["calculator"], model_options={"script": script})
    spec = team("approving", members=[clerk, agent("critic", "fake/t3")], max_messages=3)
    async with serve_app(settings) as (_, client):
        assert (await client.post("/v1/teams", json=spec)).status_code == 201
    with LiveServer(settings) as server:
        done = await asyncio.to_thread(
            subprocess.run,
            [node, str(folder / "approve.mjs"), f"{server.url}/agui/teams/approving", "thread-approve"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    (interrupt,) = seen["interrupts"]
    assert interrupt["reason"] == "tool_approval" and seen["firstEnd"] == "interrupt"
    assert [interrupt["toolCallId"]] == seen["calls"], "the interrupt is bound to the call the client saw"
    assert interrupt["responseSchema"]["required"] == ["decision"]
    assert interrupt["metadata"]["tool"]["arguments"] == {"expression": "6*7"}
    (result,) = seen["results"]
    assert result[0] == interrupt["toolCallId"] and "Result: 48" in result[1]
    assert seen["secondEnd"] == "success"
