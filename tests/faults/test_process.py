"""The process stops under live runs: SIGTERM (runs end ``cancelled``, reason ``shutdown``) and a
kill (the next start settles what was left ``running``: ``failed``, ``server_restarted``).
Either way every committed message is intact, and a run that never started is started again."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import LiveServer, make_settings
from tests.e2e.test_streaming import assert_well_formed
from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import collect, read_events

pytestmark = pytest.mark.e2e


def asking_team() -> dict[str, Any]:
    """A run waiting for a person in its process: a graph waits live (a round robin would park and
    outlive the process: tests/faults/test_parked_runs.py)."""
    members = [agent("helper", "fake/t3"), {"name": "human", "kind": "user_proxy"}]
    return team(kind="graph", members=members, edges=[{"source": "helper", "target": "human"}], max_messages=4)


def serve(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    return spawn_serve(port, settings.database_url, SWARM_SHUTDOWN_GRACE_S="0.2")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


async def live_runs(client: httpx.AsyncClient) -> dict[str, Any]:
    """A run streaming (with a committed reply), one waiting for a person, one queued behind the first."""
    streaming = (await client.post("/v1/runs", json=run_body(team=team(model="fake/t60-d5", max_messages=60)))).json()
    async with client.stream("GET", f"/v1/runs/{streaming['id']}/events") as response:
        async for event in read_events(response):
            if event["type"] == "message.completed" and event["data"]["agent"] != "user":
                break
    waiting = (await client.post("/v1/runs", json=run_body(team=asking_team()))).json()
    await wait_for_status(client, waiting["id"], {"awaiting_input"})
    behind = {"conversation_id": streaming["conversation_id"], "if_busy": "enqueue"}
    queued = (await client.post("/v1/runs", json=run_body(team=team(model="fake/t3"), **behind))).json()
    assert (await client.get(f"/v1/runs/{queued['id']}")).json()["status"] == "queued"
    return {"streaming": streaming, "waiting": waiting, "queued": queued}


async def assert_settled(client: httpx.AsyncClient, run_id: str, status: str, code: str) -> dict[str, Any]:
    run = (await client.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == status, run
    assert (run["error"] or {}).get("code", run["stop_reason"]) == code, run
    events = await collect(client, f"/v1/runs/{run_id}/events")
    assert_well_formed(events)
    assert events[-1]["seq"] == run["last_seq"]
    completed = {e["data"]["message_id"]: e["data"]["text"] for e in events if e["type"] == "message.completed"}
    messages = (
        await client.get(f"/v1/conversations/{run['conversation_id']}/messages", params={"run_id": run_id})
    ).json()
    assert {m["id"]: m["text"] for m in messages["data"]} == completed, "every committed message is intact"
    assert len(completed) >= 2
    return dict(run)


@pytest.fixture
def server_process(settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    proc = serve(settings, port)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def test_sigterm_ends_live_runs_cancelled_with_reason_shutdown(
    settings: Settings, server_process: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = server_process
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await wait_until_up(client, proc)
        runs = await live_runs(client)
        frames: list[dict[str, Any]] = []
        async with client.stream(
            "GET", f"/v1/runs/{runs['streaming']['id']}/events", headers={"last-event-id": "3"}
        ) as response:
            async for event in read_events(response):
                frames.append(event)
                if len(frames) == 3:
                    proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down gracefully
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM), proc.stderr.read().decode() if proc.stderr else ""
    assert frames[-1]["type"] == "stream.closing" and frames[-1]["reason"] == "shutdown"
    with LiveServer(settings) as server:
        async with server.client() as client:
            for name in ("streaming", "waiting"):
                run = await assert_settled(client, runs[name]["id"], "cancelled", "shutdown")
                last = (await collect(client, f"/v1/runs/{run['id']}/events"))[-1]
                assert last["type"] == "run.cancelled" and last["data"]["reason"] == "shutdown"
            # the run that never started was not lost: it starts again on this server
            done = await wait_for_status(client, runs["queued"]["id"], {"succeeded", "failed", "cancelled"})
            assert done["status"] in ("succeeded", "cancelled"), done


async def test_a_restart_settles_runs_a_dead_process_left_running(
    settings: Settings, server_process: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = server_process
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await wait_until_up(client, proc)
        runs = await live_runs(client)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with LiveServer(settings) as server:
        async with server.client() as client:
            for name in ("streaming", "waiting"):
                await assert_settled(client, runs[name]["id"], "failed", "server_restarted")
            done = await wait_for_status(client, runs["queued"]["id"], {"succeeded", "failed", "cancelled"})
            assert done["status"] == "succeeded", done
            # the queued run continued the conversation: it has the interrupted run's committed messages
            messages = (await client.get(f"/v1/conversations/{done['conversation_id']}/messages")).json()["data"]
            assert {m["run_id"] for m in messages} == {runs["streaming"]["id"], done["id"]}
