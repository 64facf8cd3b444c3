"""Several processes, one service: API replicas that only serve, workers that only execute.

What issue 5 asks to see: a run started on replica A is streamed, cancelled and answered from either
replica; a worker killed mid-run leaves its run ``failed`` with ``worker_lost`` (or finished by another
worker when it asked for retries) with every committed message kept; a client whose replica restarts
resumes on the other with ``Last-Event-ID`` and misses nothing; and no run is ever executed twice.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runs.event_schemas import TypedRunEvent
from tests.e2e.test_streaming import assert_well_formed
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.fixtures.sse import collect, read_events
from tests.scaleout.conftest import LEASE_S, Cluster

pytestmark = pytest.mark.e2e

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


def asking_team() -> dict[str, Any]:
    return team(members=[agent("helper", "fake/t3"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


def slow_team(max_messages: int = 40) -> dict[str, Any]:
    # every reply streams 30 tokens at 10 ms: a run long enough to act on mid-way
    return team(model="fake/t30-d10", max_messages=max_messages)


async def first_message(http: httpx.AsyncClient, url: str, run_id: str) -> list[dict[str, Any]]:
    """Stream a run until its first agent message is committed; the events so far."""
    seen: list[dict[str, Any]] = []
    async with http.stream("GET", f"{url}/v1/runs/{run_id}/events") as response:
        async for event in read_events(response):
            seen.append(event)
            if event["type"] == "message.completed" and event["data"]["agent"] != "user":
                return seen
    raise AssertionError(f"run ended before a message: {seen[-1]}")


async def test_any_replica_starts_streams_answers_and_cancels_any_run(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    worker = cluster.worker("worker")
    await cluster.up(a, b, worker)

    # started on A, streamed live from B, answered on A
    asking = (await http.post(f"{a.url}/v1/runs", json=run_body(team=asking_team()))).json()
    events: list[dict[str, Any]] = []
    async with http.stream("GET", f"{b.url}/v1/runs/{asking['id']}/events") as response:
        async for event in read_events(response):
            events.append(event)
            if event["type"] == "input.requested":
                answer = {"request_id": event["data"]["request_id"], "content": "Ship it."}
                stale = await http.post(f"{a.url}/v1/runs/{asking['id']}/input", json={**answer, "request_id": "nope"})
                assert stale.status_code == 409 and stale.json()["code"] == "unknown_input_request", stale.text
                accepted = await http.post(f"{a.url}/v1/runs/{asking['id']}/input", json=answer)
                assert accepted.status_code == 202, accepted.text
    assert_well_formed(events)
    received = [e for e in events if e["type"] == "input.received"]
    assert received and received[0]["data"]["content"] == "Ship it."
    assert events[-1]["type"] == "run.completed"
    late = await http.post(f"{b.url}/v1/runs/{asking['id']}/input", json={"request_id": "x", "content": "late"})
    assert late.status_code == 409 and late.json()["code"] == "not_awaiting_input"

    # started on B, cancelled from A while it streams; every watcher sees the end
    slow = (await http.post(f"{b.url}/v1/runs", json=run_body(team=slow_team()))).json()
    await first_message(http, a.url, slow["id"])
    cancelled = await http.post(f"{a.url}/v1/runs/{slow['id']}/cancel")
    assert cancelled.status_code in (200, 202), cancelled.text
    run = await wait_for_status(http, slow["id"], {"cancelled"}, timeout=5, url=b.url)
    assert run["stop_reason"] == "cancelled"
    for url in (a.url, b.url):
        replay = await collect(http, f"{url}/v1/runs/{slow['id']}/events")
        assert_well_formed(replay)
        assert replay[-1]["type"] == "run.cancelled"


async def test_a_queued_run_is_cancelled_without_any_worker(cluster: Cluster, http: httpx.AsyncClient) -> None:
    a = cluster.api("api-a")
    await cluster.up(a)
    queued = (await http.post(f"{a.url}/v1/runs", json=run_body())).json()
    cancelled = await http.post(f"{a.url}/v1/runs/{queued['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    events = await collect(http, f"{a.url}/v1/runs/{queued['id']}/events")
    assert [e["type"] for e in events] == ["run.queued", "run.cancelled"]


async def test_a_killed_worker_s_run_fails_worker_lost_and_keeps_its_messages(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = cluster.api("api-a")
    doomed = cluster.worker("doomed")
    await cluster.up(a, doomed)
    run = (await http.post(f"{a.url}/v1/runs", json=run_body(team=slow_team()))).json()

    watched: list[dict[str, Any]] = []

    async def watch() -> None:
        async with http.stream("GET", f"{a.url}/v1/runs/{run['id']}/events") as response:
            async for event in read_events(response):
                watched.append(event)

    watcher = asyncio.create_task(watch())
    await first_message(http, a.url, run["id"])
    committed = (await http.get(f"{a.url}/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    cluster.kill(doomed)

    # the lease lapses, a sweeper (the API replica's) settles the run; the watcher gets the end
    await asyncio.wait_for(watcher, timeout=LEASE_S + 10)
    settled = await wait_for_status(http, run["id"], {"failed"}, timeout=1, url=a.url)
    assert settled["error"]["code"] == "worker_lost", settled
    assert watched[-1]["type"] == "run.failed" and watched[-1]["data"]["error"]["code"] == "worker_lost"
    seqs = [e["seq"] for e in watched]
    assert seqs == sorted(set(seqs)), "in order, no duplicates"
    stored = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    assert [e["type"] for e in stored if e["type"] in TERMINAL] == ["run.failed"]
    assert TypedRunEvent.model_validate(stored[-1]).root.model_dump(mode="json") == stored[-1]
    after = (await http.get(f"{a.url}/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["id"] for m in committed] == [m["id"] for m in after[: len(committed)]], "nothing committed is lost"
    assert len(committed) >= 2  # the task and at least one reply


async def test_with_retries_a_killed_worker_s_run_resumes_on_another_from_its_last_turn(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = cluster.api("api-a")
    doomed = cluster.worker("doomed")
    await cluster.up(a, doomed)
    body = run_body(team=team(model="fake/t30-d30", max_messages=5), retries=1)
    run = (await http.post(f"{a.url}/v1/runs", json=body)).json()
    seen = await first_message(http, a.url, run["id"])
    # and into the next message: a few of its deltas out, then the worker dies mid-message
    async with http.stream(
        "GET", f"{a.url}/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(seen[-1]["seq"])}
    ) as response:
        async for event in read_events(response):
            if event["type"] == "message.delta" and event["seq"] >= seen[-1]["seq"] + 5:
                cut = event["data"]["message_id"]
                break
    cluster.kill(doomed)
    spare = cluster.worker("spare")  # the run is requeued when the lease lapses, and the spare takes it
    await cluster.up(spare)

    finished = await wait_for_status(http, run["id"], {"succeeded", "failed"}, timeout=LEASE_S + 20, url=a.url)
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 2
    events = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    types = [e["type"] for e in events]
    assert types.count("run.requeued") == 1 and types.count("run.resumed") == 1, types
    assert types.count("run.started") == 1, "the run resumed; it did not start over"
    for raw in events:  # as documented: the OpenAPI event union describes them exactly
        assert TypedRunEvent.model_validate(raw).root.model_dump(mode="json") == raw
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert types[-1] == "run.completed"
    requeued = events[types.index("run.requeued")]["data"]
    assert requeued["reason"] == "worker_lost" and cut in requeued["abandoned_message_ids"]
    assert cut not in {e["data"]["message_id"] for e in events if e["type"] == "message.completed"}
    # the stored messages hold each turn once: the task, then replies taking turns
    messages = (await http.get(f"{a.url}/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert [m["agent"] for m in messages] == ["user", "writer", "critic", "writer", "critic"]
    assert [m["position"] for m in messages] == [1, 2, 3, 4, 5]


async def test_a_client_resumes_on_the_other_replica_when_its_replica_restarts(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = cluster.api("api-a"), cluster.api("api-b")
    worker = cluster.worker("worker")
    await cluster.up(a, b, worker)
    run = (await http.post(f"{a.url}/v1/runs", json=run_body(team=slow_team(max_messages=8)))).json()

    got: list[dict[str, Any]] = []
    closing: dict[str, Any] | None = None
    async with http.stream("GET", f"{a.url}/v1/runs/{run['id']}/events") as response:
        async for event in read_events(response):
            if event["type"] == "stream.closing":
                closing = event
                continue
            got.append(event)
            if event["type"] == "message.completed" and len(got) > 5 and a.alive():
                a.popen.terminate()  # a restart: the replica goes away mid-stream
    assert closing is not None and closing["last_seq"] == got[-1]["seq"], closing
    assert cluster.terminate(a) in (0, -signal.SIGTERM)

    async with http.stream(
        "GET", f"{b.url}/v1/runs/{run['id']}/events", headers={"Last-Event-ID": str(got[-1]["seq"])}
    ) as response:
        got.extend([e async for e in read_events(response)])
    assert_well_formed(got)
    assert got[-1]["type"] == "run.completed"


async def test_many_runs_on_several_workers_each_run_once(cluster: Cluster, http: httpx.AsyncClient) -> None:
    cluster.env["SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL"] = "100"
    a = cluster.api("api-a")
    workers = [cluster.worker(f"worker-{i}", SWARM_WORKER_CONCURRENCY="4") for i in range(3)]
    await cluster.up(a, *workers)
    runs = await asyncio.gather(
        *(http.post(f"{a.url}/v1/runs", json=run_body(team=team(model="fake/t4-d2"))) for _ in range(36))
    )
    assert all(r.status_code == 202 for r in runs), [r.text for r in runs if r.status_code != 202]
    ids = [r.json()["id"] for r in runs]
    for run_id in ids:
        run = await wait_for_status(http, run_id, {"succeeded", "failed", "cancelled"}, timeout=60, url=a.url)
        assert run["status"] == "succeeded" and run["attempts"] == 1, run
        events = await collect(http, f"{a.url}/v1/runs/{run_id}/events")
        assert_well_formed(events)
        assert [e["type"] for e in events].count("run.started") == 1
    claims: dict[str, list[str]] = {}
    for worker in workers:
        for line in worker.log.read_text().splitlines():
            if '"run_claimed"' in line:
                for run_id in ids:
                    if run_id in line:
                        claims.setdefault(run_id, []).append(worker.name)
    assert sorted(claims) == sorted(ids), "every run was claimed"
    assert all(len(owners) == 1 for owners in claims.values()), {k: v for k, v in claims.items() if len(v) > 1}
    assert len({owner for owners in claims.values() for owner in owners}) > 1, "the work was shared"


async def test_sigterm_stops_a_worker_gracefully(cluster: Cluster, http: httpx.AsyncClient) -> None:
    a = cluster.api("api-a")
    worker = cluster.worker("worker")  # SWARM_SHUTDOWN_GRACE_S=0.5: shorter than the run
    await cluster.up(a, worker)
    run = (await http.post(f"{a.url}/v1/runs", json=run_body(team=slow_team()))).json()
    await first_message(http, a.url, run["id"])
    # uvicorn re-raises the signal once it has shut down cleanly
    assert cluster.terminate(worker) in (0, -signal.SIGTERM)
    assert '"runs_draining"' in worker.log.read_text() and '"stopped"' in worker.log.read_text()

    # the run was given its grace, then cancelled with reason `shutdown`; the stream says so
    settled = await wait_for_status(http, run["id"], {"cancelled"}, timeout=1, url=a.url)
    assert settled["stop_reason"] == "shutdown"
    events = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    assert_well_formed(events)
    assert events[-1]["data"]["reason"] == "shutdown"

    # a stopped worker claims nothing more: a new run waits for the next one
    later = (await http.post(f"{a.url}/v1/runs", json=run_body())).json()
    assert (await http.get(f"{a.url}/v1/runs/{later['id']}")).json()["status"] == "queued"
    successor = cluster.worker("successor")
    await cluster.up(successor)
    assert (await wait_for_status(http, later["id"], {"succeeded"}, timeout=15, url=a.url))["attempts"] == 1


async def test_a_tool_call_cut_by_a_lost_worker_is_not_run_again_on_the_next(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    cluster.env.update(SWARM_TOOLS='["tests.fixtures.tools:slow_note"]', SWARM_TEST_NOTES=str(notes))
    a = cluster.api("api-a")
    doomed = cluster.worker("doomed")
    await cluster.up(a, doomed)
    script = [{"tool_calls": [{"name": "slow_note", "arguments": {"note": "buy milk"}}]}]
    members = [agent("clerk", tools=["slow_note"], model_options={"script": script}), agent("critic", "fake/t4")]
    body = run_body(team=team(members=members, max_messages=3), retries=1)
    run = (await http.post(f"{a.url}/v1/runs", json=body)).json()
    async with asyncio.timeout(30):
        while not (notes.exists() and notes.read_text() == "buy milk\n"):
            await asyncio.sleep(0.02)
    cluster.kill(doomed)  # the tool is running (it takes a minute)
    spare = cluster.worker("spare")
    await cluster.up(spare)

    finished = await wait_for_status(http, run["id"], {"succeeded", "failed"}, timeout=LEASE_S + 20, url=a.url)
    assert finished["status"] == "succeeded", finished
    assert notes.read_text() == "buy milk\n", "the cut call was not run again"
    events = await collect(http, f"{a.url}/v1/runs/{run['id']}/events")
    calls = [e for e in events if e["type"] == "tool.call"]
    results = [e for e in events if e["type"] == "tool.result"]
    assert len(calls) == 1 and len(results) == 1, (calls, results)
    assert results[0]["data"]["is_error"] is True and "without running it again" in results[0]["data"]["content"]
    types = [e["type"] for e in events]
    assert types.index("run.requeued") < types.index("run.resumed") < types.index("tool.result")
