"""Parked runs in distributed mode, with real processes (issue 24).

A run parked by a worker belongs to no process: its worker may die (``kill -9``) and no sweeper takes it
for lost; the answer, on any replica, puts it back in the queue for any worker, which goes on from the
parked team's state; a cancel or the input's deadline ends it with no worker at all. A watcher on
another replica sees one stream: seqs 1..n dense, one terminal event. The processes share one
``SWARM_FAKE_PROMPT_LOG``, so a test sees what the fake model was sent, whichever process sent it.
A resumed run that loses its worker still has the retry it asked for: parking spends none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.runs.models import Run
from tests.e2e.test_streaming import TERMINAL, assert_well_formed
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import collect, read_events
from tests.scaleout.conftest import LEASE_S, Cluster, Proc

pytestmark = pytest.mark.e2e

ASKING_TASK = "Plan the launch of the river ferry."
ANSWER = "Launch on Tuesday, from the north pier."
PARKED_SWEEP_S = 0.25  # how often every process looks for expired parked runs (default 5 s)
RACES = 4  # parked runs answered twice at once
STARTUP_S = 30  # a bound on a step that needs a process to answer, not a timing assumption


def asking_team() -> dict[str, Any]:
    # the task, the helper, the human's turn (the run parks), the answer, the helper again: 4 messages
    return team(members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


@pytest.fixture
def prompts(cluster: Cluster, tmp_path: Path) -> Path:
    """The prompt log every process of the cluster appends to, and a short parked-run sweep."""
    path = tmp_path / "prompts.jsonl"
    cluster.env["SWARM_FAKE_PROMPT_LOG"] = str(path)
    cluster.env["SWARM_PARKED_SWEEP_S"] = str(PARKED_SWEEP_S)
    return path


@dataclass
class Watcher:
    """Follows a run's SSE stream on one replica to its terminal event, resuming with ``Last-Event-ID``
    whenever the stream is cut before it."""

    http: httpx.AsyncClient
    url: str
    run_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Task[list[dict[str, Any]]] = field(init=False)

    async def follow(self) -> list[dict[str, Any]]:
        while self.connections < 20:
            self.connections += 1
            headers = {"Last-Event-ID": str(self.events[-1]["seq"])} if self.events else {}
            try:
                async with self.http.stream(
                    "GET", f"{self.url}/v1/runs/{self.run_id}/events", headers=headers
                ) as response:
                    async for event in read_events(response):
                        if "seq" not in event:
                            continue  # a stream notice (``stream.closing``): resumed below
                        self.events.append(event)
                        if event["type"] == "input.requested":
                            self.requested.set()
                        if event["type"] in TERMINAL:
                            return self.events
            except httpx.TransportError:
                pass  # cut: resume from the last seq seen
        raise AssertionError(f"no terminal event after {self.connections} connections: {self.events[-3:]}")


@contextlib.asynccontextmanager
async def watching(http: httpx.AsyncClient, proc: Proc, runs: list[dict[str, Any]]) -> AsyncIterator[list[Watcher]]:
    """A watcher per run on ``proc``, following from now on (``Watcher.done``: its events, to the end)."""
    watchers = [Watcher(http, proc.url, run["id"]) for run in runs]
    for watcher in watchers:
        watcher.done = asyncio.create_task(watcher.follow())
    try:
        yield watchers
    finally:
        for watcher in watchers:
            watcher.done.cancel()
        await asyncio.gather(*(watcher.done for watcher in watchers), return_exceptions=True)


async def start(http: httpx.AsyncClient, proc: Proc, **body: Any) -> dict[str, Any]:
    response = await http.post(f"{proc.url}/v1/runs", json=run_body(**body))
    assert response.status_code == 202, response.text
    return dict(response.json())


async def parked(http: httpx.AsyncClient, proc: Proc, run_id: str, watcher: Watcher) -> dict[str, Any]:
    """Once the watcher has seen ``input.requested`` and the run is ``awaiting_input``: the request."""
    await asyncio.wait_for(watcher.requested.wait(), timeout=STARTUP_S)
    await wait_for_status(http, run_id, {"awaiting_input"}, timeout=STARTUP_S, url=proc.url)
    return dict(next(e for e in watcher.events if e["type"] == "input.requested")["data"])


async def stored_worker(database_url: str, run_id: str) -> str | None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(select(Run.worker_id).where(Run.id == run_id))
    finally:
        await engine.dispose()


def logged(proc: Proc, event: str, run_id: str) -> bool:
    """Whether the process logged ``event`` for the run (JSON log lines)."""
    for line in proc.log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event and record.get("run_id") == run_id:
                return True
    return False


async def test_a_run_parked_on_a_killed_worker_is_answered_on_another_replica_and_finishes_on_another_worker(
    cluster: Cluster, prompts: Path, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    w1 = cluster.worker("w1")
    await cluster.up(a, b, w1)
    # a control run, live on W1 when it dies: its end marks the moment a sweeper saw W1's lease lapse
    control = await start(http, a, task="Count the birds.", team=team(model="fake/t30-d10", max_messages=40))
    run = await start(http, a, task=ASKING_TASK, team=asking_team())
    async with watching(http, a, [run]) as (watcher,):
        request = await parked(http, a, run["id"], watcher)
        assert request["agent"] == "human"
        assert (await http.get(f"{a.url}/v1/runs/{control['id']}")).json()["status"] == "running"
        cluster.kill(w1)

        # Not timing luck: the control run held a lease W1 renewed until it died, and is settled
        # `worker_lost` only by a sweeper that found that lease lapsed. The parked run let its lease go when
        # it parked, before that; a sweeper that took parked runs for lost would have settled it first.
        lost = await wait_for_status(http, control["id"], {"failed"}, timeout=LEASE_S + STARTUP_S, url=a.url)
        assert lost["error"]["code"] == "worker_lost", lost
        still = (await http.get(f"{b.url}/v1/runs/{run['id']}")).json()
        assert still["status"] == "awaiting_input", still
        assert not any(e["type"] in TERMINAL for e in watcher.events)

        w2 = cluster.worker("w2")
        await cluster.up(w2)
        answer = {"request_id": request["request_id"], "content": ANSWER}
        accepted = await http.post(f"{b.url}/v1/runs/{run['id']}/input", json=answer)
        assert accepted.status_code == 202, accepted.text

        events = await asyncio.wait_for(watcher.done, timeout=STARTUP_S)
        done = await wait_for_status(http, run["id"], {"succeeded"}, timeout=STARTUP_S, url=a.url)
        assert_well_formed(events)  # seqs 1..n dense, one terminal event, last
        assert events[-1]["type"] == "run.completed" and events[-1]["seq"] == done["last_seq"]
        types = [e["type"] for e in events]
        assert types.count("input.requested") == 1 and types.count("input.received") == 1, types
        received = next(e for e in events if e["type"] == "input.received")
        assert received["data"]["content"] == ANSWER
        assert await collect(http, f"{b.url}/v1/runs/{run['id']}/events") == events, "the stored log is what A saw"

        # parked on W1, finished on W2
        assert logged(w1, "run_parked", run["id"]) and not logged(w1, "run_resumed", run["id"])
        assert logged(w2, "run_resumed", run["id"]) and logged(w2, "run_finished", run["id"])
        worker_id = await stored_worker(cluster.database_url, run["id"])
        assert worker_id is not None and f"-{w2.popen.pid}-" in worker_id, worker_id

        messages = (await http.get(f"{a.url}/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
        assert [(m["agent"], m["text"]) for m in messages][:1] == [("user", ASKING_TASK)]
        assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"], messages
        assert messages[2]["text"] == ANSWER

        # the helper's last model call (made by W2, after the answer) had the answer in its prompt
        calls = [json.loads(line) for line in prompts.read_text().splitlines()]
        helper_calls = [c for c in calls if any(text == ASKING_TASK for _type, _source, text in c["prompt"])]
        assert len(helper_calls) == 2, helper_calls
        last = helper_calls[-1]
        assert last["reply"] == messages[-1]["text"]
        assert ["UserMessage", "human", ANSWER] in last["prompt"], last["prompt"]
        assert not any(text == ANSWER for _type, _source, text in helper_calls[0]["prompt"])


async def test_a_parked_run_is_cancelled_on_another_replica_with_no_worker(
    cluster: Cluster, prompts: Path, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    worker = cluster.worker("worker")
    await cluster.up(a, b, worker)
    run = await start(http, a, task=ASKING_TASK, team=asking_team())
    async with watching(http, a, [run]) as (watcher,):
        await parked(http, a, run["id"], watcher)
        cluster.kill(worker)  # no process executes anything now

        cancelled = await http.post(f"{b.url}/v1/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text  # 200: ended when answered, not stopping
        assert cancelled.json()["status"] == "cancelled" and cancelled.json()["stop_reason"] == "cancelled"
        events = await asyncio.wait_for(watcher.done, timeout=STARTUP_S)
        assert_well_formed(events)
        assert events[-1]["type"] == "run.cancelled" and events[-2]["type"] == "input.requested", events[-2:]
        assert events[-1]["seq"] == cancelled.json()["last_seq"]
        assert await collect(http, f"{a.url}/v1/runs/{run['id']}/events") == events
        again = await http.post(f"{a.url}/v1/runs/{run['id']}/cancel")
        assert again.status_code == 200 and again.json()["last_seq"] == events[-1]["seq"], "cancelled once"
        late = await http.post(f"{a.url}/v1/runs/{run['id']}/input", json={"request_id": "x", "content": "late"})
        assert late.status_code == 409 and late.json()["code"] == "not_awaiting_input", late.text


async def test_two_answers_racing_on_two_replicas_one_is_accepted(
    cluster: Cluster, prompts: Path, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    worker = cluster.worker("worker")
    await cluster.up(a, b, worker)
    # several parked runs, every one answered on A and on B at once: the more requests in flight
    # together, the more pairs really overlap (each replica reads the run as `awaiting_input`)
    runs = [await start(http, a, task=f"{ASKING_TASK} ({i})", team=asking_team()) for i in range(RACES)]
    async with watching(http, a, runs) as watchers:
        requests = [await parked(http, a, run["id"], watcher) for run, watcher in zip(runs, watchers, strict=True)]
        for proc in (a, b):  # warm: neither replica's answers wait for a connect or a first-call setup
            for _ in range(RACES):
                warm = await http.post(f"{proc.url}/v1/runs/run_none/input", json={"request_id": "x", "content": "x"})
                assert warm.status_code == 404, warm.text

        def answer(proc: Proc, run: dict[str, Any], request: dict[str, Any]) -> Awaitable[httpx.Response]:
            body = {"request_id": request["request_id"], "content": f"From {proc.name}."}
            return http.post(f"{proc.url}/v1/runs/{run['id']}/input", json=body)

        pairs = [
            (answer(a, run, request), answer(b, run, request)) for run, request in zip(runs, requests, strict=True)
        ]
        flat = await asyncio.gather(*(call for pair in pairs for call in pair))
        for i, run in enumerate(runs):
            from_a, from_b = flat[2 * i], flat[2 * i + 1]
            assert sorted([from_a.status_code, from_b.status_code]) == [202, 409], [from_a.text, from_b.text]
            loser = from_a if from_a.status_code == 409 else from_b
            assert loser.json()["code"] == "not_awaiting_input", loser.text
            winner = "From api-a." if from_a.status_code == 202 else "From api-b."

            events = await asyncio.wait_for(watchers[i].done, timeout=STARTUP_S)
            assert_well_formed(events)
            assert events[-1]["type"] == "run.completed"
            assert [e["data"]["content"] for e in events if e["type"] == "input.received"] == [winner]
            messages = (await http.get(f"{b.url}/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
            assert [m["text"] for m in messages if m["agent"] == "human"] == [winner]


async def test_an_expired_parked_run_times_out_by_a_replica_s_sweeper_with_no_worker(
    cluster: Cluster, prompts: Path, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    worker = cluster.worker("worker")
    await cluster.up(a, b, worker)
    # long enough to park and kill the worker well within it; short enough for a test
    run = await start(http, a, task=ASKING_TASK, team=asking_team(), input_timeout_s=4)
    async with watching(http, a, [run]) as (watcher,):
        await parked(http, a, run["id"], watcher)
        cluster.kill(worker)
        before = (await http.get(f"{a.url}/v1/runs/{run['id']}")).json()
        assert before["status"] == "awaiting_input", "still waiting once the worker is gone"

        events = await asyncio.wait_for(watcher.done, timeout=STARTUP_S)
        assert_well_formed(events)
        end = events[-1]
        assert end["type"] == "run.failed" and end["data"]["status"] == "timed_out", end
        assert end["data"]["error"]["code"] == "input_timeout"
        settled = await wait_for_status(http, run["id"], {"timed_out"}, timeout=1, url=b.url)
        assert settled["error"]["code"] == "input_timeout" and settled["last_seq"] == end["seq"], settled
        assert any(logged(replica, "parked_run_expired", run["id"]) for replica in (a, b)), "a replica's sweeper"
        assert not logged(worker, "parked_run_expired", run["id"])


async def test_parking_does_not_spend_a_retry(cluster: Cluster, prompts: Path, http: httpx.AsyncClient) -> None:
    a = cluster.api("api-a")
    w1 = cluster.worker("w1")
    await cluster.up(a, w1)
    slow = team(members=[agent("helper", "fake/t40-d20"), {"name": "human", "kind": "user_proxy"}], max_messages=4)
    run = await start(http, a, task=ASKING_TASK, team=slow, retries=1)
    async with watching(http, a, [run]) as (watcher,):
        request = await parked(http, a, run["id"], watcher)
        answer = {"request_id": request["request_id"], "content": ANSWER}
        assert (await http.post(f"{a.url}/v1/runs/{run['id']}/input", json=answer)).status_code == 202
        # resumed on W1, which is killed while the helper's reply to the answer streams
        async with asyncio.timeout(STARTUP_S):
            while not streaming_after_answer(watcher.events):
                await asyncio.sleep(0.02)
        cluster.kill(w1)
        w2 = cluster.worker("w2")
        await cluster.up(w2)
        # the run asked for a retry and has not been lost before: requeued, not failed. The retry starts
        # the run again from its stored messages (resuming mid-turn is not built yet), so the person is
        # asked again, and answered, and the run finishes on W2
        async with asyncio.timeout(LEASE_S + STARTUP_S):
            while [e["type"] for e in watcher.events].count("input.requested") < 2:
                assert not any(e["type"] in TERMINAL for e in watcher.events), watcher.events[-1]
                await asyncio.sleep(0.05)
        again = [e for e in watcher.events if e["type"] == "input.requested"][-1]["data"]
        await wait_for_status(http, run["id"], {"awaiting_input"}, timeout=STARTUP_S, url=a.url)
        answer = {"request_id": again["request_id"], "content": ANSWER}
        assert (await http.post(f"{a.url}/v1/runs/{run['id']}/input", json=answer)).status_code == 202
        events = await asyncio.wait_for(watcher.done, timeout=STARTUP_S)
        assert events[-1]["type"] == "run.completed", events[-1]
        assert [e["type"] for e in events].count("run.requeued") == 1


def streaming_after_answer(events: list[dict[str, Any]]) -> bool:
    types = [e["type"] for e in events]
    return "input.received" in types and "message.delta" in types[types.index("input.received") :]
