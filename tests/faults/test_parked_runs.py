"""Parked runs (issue 24) in the embedded mode, across real process deaths and restarts.

A run waiting for a person holds nothing in memory: its team state and request are committed with
its ``input.requested``. So a ``kill -9`` loses nothing (the run is still ``awaiting_input`` on the
next start and an answer then resumes it, the answer in the model's context); a deadline that
passes while no process is up is enforced by the next one's sweeper; two answers racing for one
request are settled by the database, once; and parked runs hold no live-run slot, only a parked
one of their own.

"The process holds no run" is read from ``swarm_runs_live`` (``/metrics``): a run leaves it when its
task has let it go, which for a parked run is after its park is counted.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings
from tests.e2e.test_streaming import TERMINAL, assert_well_formed
from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.runs import start_run, stored_events, wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import read_events

pytestmark = pytest.mark.e2e

ANSWER = "Use the blue one, please."
ENDED = {"succeeded", "failed", "cancelled", "timed_out"}


def asking_team() -> dict[str, Any]:
    """The helper, then the person (a user proxy), then the helper again."""
    return team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


async def no_live_runs(client: httpx.AsyncClient, timeout: float = 15) -> None:
    """Until the process holds no run (``swarm_runs_live`` 0): every parked run's task has let it go."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        text = (await client.get("/metrics")).text
        live = next(line for line in text.splitlines() if line.startswith("swarm_runs_live "))
        if float(live.split()[1]) == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the process still holds runs: {live}")
        await asyncio.sleep(0.02)


async def parked_request(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The ``input.requested`` event of a run that parked (the last event it stored)."""
    await wait_for_status(client, run_id, {"awaiting_input"})
    events = await stored_events(client, run_id)
    assert events[-1]["type"] == "input.requested", events[-1]
    return events[-1]


async def messages_of(client: httpx.AsyncClient, run: dict[str, Any]) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/conversations/{run['conversation_id']}/messages")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


class Servers:
    """``swarmdirector serve`` processes, one after another, on one port and one SQLite file."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.database_url = f"sqlite+aiosqlite:///{tmp_path / 'parked.db'}"
        self.port = free_port()
        self.env = {"SWARM_SHUTDOWN_GRACE_S": "0.2", **env}
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    async def start(self) -> httpx.AsyncClient:
        self.procs.append(spawn_serve(self.port, self.database_url, **self.env))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=httpx.Timeout(30, read=30))
        await wait_until_up(client, self.proc)
        return client

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@asynccontextmanager
async def servers(tmp_path: Path, **env: str) -> AsyncIterator[Servers]:
    running = Servers(tmp_path, **env)
    try:
        yield running
    finally:
        running.stop_all()


class Watcher:
    """One client of a run's stream: every event it got, in order, over every connection it made."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requested = asyncio.Event()  # it has seen ``input.requested``
        self.connected = asyncio.Event()  # its current connection is open

    @property
    def run_id(self) -> str:
        return str(self.events[0]["run_id"])

    async def start(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        """Start the run with ``POST /v1/runs/stream`` and read until the connection breaks."""
        await self._read(client.stream("POST", "/v1/runs/stream", json=body))

    async def resume(self, client: httpx.AsyncClient) -> None:
        """Reconnect after the last seq it got (``Last-Event-ID``) and read to the terminal event."""
        headers = {"last-event-id": str(self.events[-1]["seq"])}
        await self._read(client.stream("GET", f"/v1/runs/{self.run_id}/events", headers=headers))

    async def _read(self, stream: Any) -> None:
        self.connected.clear()
        try:
            async with stream as response:
                self.connected.set()
                async for event in read_events(response):
                    if "seq" not in event:
                        continue  # a stream notice, not an event
                    self.events.append(event)
                    if event["type"] == "input.requested":
                        self.requested.set()
                    if event["type"] in TERMINAL:
                        return
        except (httpx.TransportError, httpx.RemoteProtocolError):
            return  # the server was killed


async def test_a_parked_run_survives_kill_9_and_resumes_with_the_answer_after_the_restart(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    async with servers(tmp_path, SWARM_FAKE_PROMPT_LOG=str(prompts)) as running:
        client = await running.start()
        watcher = Watcher()
        first = asyncio.create_task(watcher.start(client, run_body(team=asking_team())))
        async with asyncio.timeout(30):
            await watcher.requested.wait()
        run_id = watcher.run_id
        request = (await parked_request(client, run_id))["data"]
        assert request["agent"] == "human"

        running.kill()
        await first  # its connection broke with the server
        await client.aclose()
        assert not any(e["type"] in TERMINAL for e in watcher.events), "the kill came before any end"

        client = await running.start()
        try:
            run = (await client.get(f"/v1/runs/{run_id}")).json()
            assert run["status"] == "awaiting_input", run  # not failed/server_restarted: nothing was lost
            assert run["error"] is None, run
            # the watcher comes back after the last seq it got, before the answer exists
            second = asyncio.create_task(watcher.resume(client))
            async with asyncio.timeout(30):
                await watcher.connected.wait()
            answer = {"request_id": request["request_id"], "content": ANSWER}
            r = await client.post(f"/v1/runs/{run_id}/input", json=answer)
            assert r.status_code == 202, r.text
            async with asyncio.timeout(30):
                await second

            done = await wait_for_status(client, run_id, ENDED)
            assert done["status"] == "succeeded", done
            stored = await stored_events(client, run_id)
            messages = await messages_of(client, done)
        finally:
            await client.aclose()

    # the watcher saw one unbroken stream over its two connections: the stored log, seq for seq
    seen = watcher.events
    assert_well_formed(seen)
    assert [e["seq"] for e in seen] == [e["seq"] for e in stored]
    assert seen[-1]["type"] == "run.completed"
    types = [e["type"] for e in seen]
    assert types.count("input.requested") == types.count("input.received") == 1
    assert types.index("input.requested") < types.index("input.received")
    received = next(e for e in seen if e["type"] == "input.received")["data"]
    assert received == {"request_id": request["request_id"], "agent": "human", "content": ANSWER}

    assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"]
    assert messages[2]["text"] == ANSWER
    # the helper's call after the answer, made by the restarted process, had the answer in its prompt
    calls = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert len(calls) == 2, calls
    before, after = calls
    assert before["reply"] == messages[1]["text"] and not any(text == ANSWER for _, _, text in before["prompt"])
    assert after["reply"] == messages[3]["text"]
    assert [source for _, source, text in after["prompt"] if text == ANSWER] == ["human"]


async def test_an_input_deadline_that_passes_while_the_server_is_down_ends_the_run_on_restart(tmp_path: Path) -> None:
    timeout_s = 2.0
    async with servers(tmp_path) as running:
        client = await running.start()
        try:
            run = await start_run(client, team=asking_team(), input_timeout_s=timeout_s)
            requested = await parked_request(client, run["id"])
            assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "awaiting_input"
            running.kill()  # well before the deadline: it passes while no process is up
        finally:
            await client.aclose()

        # a real deadline: wait until the wall clock is past it (the stored one is the request's time + timeout)
        deadline = datetime.fromisoformat(requested["at"]) + timedelta(seconds=timeout_s)
        while (left := (deadline - datetime.now(UTC)).total_seconds()) >= 0:
            await asyncio.sleep(left + 0.01)

        client = await running.start()
        try:
            done = await wait_for_status(client, run["id"], ENDED)
            events = await stored_events(client, run["id"])
        finally:
            await client.aclose()

    assert done["status"] == "timed_out", done
    assert done["error"]["code"] == "input_timeout", done
    assert_well_formed(events)
    end = events[-1]
    assert [e["type"] for e in events].count("run.failed") == 1
    assert end["type"] == "run.failed" and end["data"]["status"] == "timed_out"
    assert end["data"]["error"]["code"] == "input_timeout"
    assert end["seq"] == requested["seq"] + 1 == done["last_seq"], "the run's end follows its park"


async def test_two_answers_racing_for_a_parked_request_one_wins_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with LiveServer(settings) as server:
        async with server.client() as client:
            run = await start_run(client, team=asking_team())
            request = (await parked_request(client, run["id"]))["data"]
            await no_live_runs(client)
    # a graceful stop and a new server: no process ever held the run the answers race for
    with LiveServer(settings) as server:
        async with server.client() as client:
            assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "awaiting_input"
            contents = ("Answer one.", "Answer two.")
            replies = await asyncio.gather(
                *(
                    client.post(f"/v1/runs/{run['id']}/input", json={"request_id": request["request_id"], "content": c})
                    for c in contents
                )
            )
            assert sorted(r.status_code for r in replies) == [202, 409], [r.text for r in replies]
            winner = contents[[r.status_code for r in replies].index(202)]
            loser = next(r for r in replies if r.status_code == 409)
            assert loser.json()["code"] == "not_awaiting_input", loser.text

            done = await wait_for_status(client, run["id"], ENDED)
            assert done["status"] == "succeeded", done
            events = await stored_events(client, run["id"])
            messages = await messages_of(client, done)

    assert_well_formed(events)
    received = [e["data"]["content"] for e in events if e["type"] == "input.received"]
    assert received == [winner]
    assert [m["text"] for m in messages if m["agent"] == "human"] == [winner]
    assert not any(m["text"] in contents and m["text"] != winner for m in messages)


async def test_parked_runs_hold_no_live_run_slot_and_have_a_limit_of_their_own(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_live_runs_per_principal=2, max_parked_runs_per_principal=3)
    with LiveServer(settings) as server:
        async with server.client() as client:
            parked = []
            for _ in range(2):
                parked.append(await start_run(client, team=asking_team()))
                await parked_request(client, parked[-1]["id"])
                await no_live_runs(client)
            # as many parked runs as live slots, and an ordinary run still starts and completes
            r = await client.post("/v1/runs/wait", json=run_body())
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text

            parked.append(await start_run(client, team=asking_team()))
            await parked_request(client, parked[-1]["id"])
            await no_live_runs(client)
            for run in parked:  # three parked, over the live limit of two
                assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "awaiting_input"

            refused = await client.post("/v1/runs", json=run_body())
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "too_many_parked_runs", refused.text

            # a cancel settles a parked run at once: its end is stored right after its last event
            cancelled = parked.pop(0)
            last_seq = (await client.get(f"/v1/runs/{cancelled['id']}")).json()["last_seq"]
            r = await client.post(f"/v1/runs/{cancelled['id']}/cancel")
            assert r.status_code in (200, 202), r.text
            assert r.json()["status"] == "cancelled", r.text
            after = (await client.get(f"/v1/runs/{cancelled['id']}")).json()
            assert after["status"] == "cancelled" and after["last_seq"] == last_seq + 1, after
            events = await stored_events(client, cancelled["id"])
            assert_well_formed(events)
            assert events[-1]["type"] == "run.cancelled" and events[-1]["seq"] == last_seq + 1

            r = await client.post("/v1/runs/wait", json=run_body())
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
            for run in parked:
                assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "awaiting_input"
