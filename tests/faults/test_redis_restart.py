"""Answers to a run's input request when they cannot reach the run's executor, under an API replica
and a worker, each a real process.

Redis is killed and started again (nothing persisted) while a run waits for a person: both processes
say so in ``/readyz``, and an answer is refused at once with ``503 signals_unavailable`` (never a 500
or a hang), the run still waiting. Once Redis is back the signal listeners reconnect and say so in
their logs, and an answer is accepted within a second.

The worker is paused while another run waits: no executor answers, so the answer is refused (``503``)
after the reply timeout; when the worker resumes it drops that late answer rather than act on it,
and the next answer is the one the run gets.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import OwnRedis
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.scaleout.conftest import Cluster, Proc

pytestmark = pytest.mark.e2e

REPLY_TIMEOUT_S = 5  # app/runtime/cluster.py: how long a replica waits for the executor's verdict


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


def log_events(proc: Proc) -> list[dict[str, Any]]:
    lines = proc.log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def logged(proc: Proc, event: str) -> bool:
    return any(e.get("event") == event for e in log_events(proc))


async def readiness(http: httpx.AsyncClient, proc: Proc) -> tuple[int, dict[str, bool]]:
    r = await http.get(f"{proc.url}/readyz")
    return r.status_code, r.json()["checks"]


async def waiting_for_input(http: httpx.AsyncClient, api: Proc) -> tuple[str, str]:
    """A new run that waits for a person in its worker (a graph waits live: a parked run needs no signal
    to be answered, tests/scaleout/test_parked.py): its id and the request id it waits on."""
    members = [agent("helper", "fake/t3"), {"name": "human", "kind": "user_proxy"}]
    edges = [{"source": "helper", "target": "human"}]
    asking = team(kind="graph", members=members, edges=edges, max_messages=4)
    run = (await http.post(f"{api.url}/v1/runs", json=run_body(team=asking))).json()
    await wait_for_status(http, run["id"], {"awaiting_input"}, url=api.url)
    page = await http.get(f"{api.url}/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
    (asked,) = [e for e in page.json()["data"] if e["type"] == "input.requested"]
    return run["id"], asked["data"]["request_id"]


async def answer(http: httpx.AsyncClient, api: Proc, run_id: str, request_id: str, content: str) -> httpx.Response:
    return await http.post(f"{api.url}/v1/runs/{run_id}/input", json={"request_id": request_id, "content": content})


async def answered_with(http: httpx.AsyncClient, api: Proc, run_id: str) -> list[str]:
    """The answers the run received, once it has finished (it must succeed)."""
    done = await wait_for_status(http, run_id, {"succeeded", "failed", "cancelled", "timed_out"}, url=api.url)
    assert done["status"] == "succeeded", done
    page = await http.get(f"{api.url}/v1/runs/{run_id}/events", headers={"accept": "application/json"})
    return [e["data"]["content"] for e in page.json()["data"] if e["type"] == "input.received"]


def refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "signals_unavailable"
    assert response.headers["retry-after"] == "1"


async def test_an_answer_that_cannot_reach_the_run_is_refused_and_one_that_can_is_accepted(
    fresh_postgres_url: str, own_redis: OwnRedis, tmp_path: Path
) -> None:
    # the Redis is the test's own, thrown away with it: any prefix does
    cluster = Cluster(fresh_postgres_url, own_redis.url, "swarmtest", tmp_path)
    cluster.env["SWARM_LEASE_S"] = "60"  # a paused worker keeps its runs
    loop = asyncio.get_running_loop()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            api, worker = cluster.api("api"), cluster.worker("worker")
            await cluster.up(api, worker)
            first, first_request = await waiting_for_input(http, api)
            second, second_request = await waiting_for_input(http, api)

            # Redis goes away
            own_redis.kill()
            for proc in (api, worker):

                async def unready(proc: Proc = proc) -> bool:
                    status, checks = await readiness(http, proc)
                    return status == 503 and checks["signals"] is False

                await eventually(unready, f"{proc.name}'s /readyz turns 503 with signals false")
            began = loop.time()
            refused(await answer(http, api, first, first_request, "Too soon."))
            assert loop.time() - began < 3, "refused at once, not after a hang"
            assert (await http.get(f"{api.url}/v1/runs/{first}")).json()["status"] == "awaiting_input"

            # and comes back, with nothing in it
            own_redis.start()
            for proc in (api, worker):

                async def reconnected(proc: Proc = proc) -> bool:
                    return logged(proc, "redis_signals_reconnected")

                await eventually(reconnected, f"{proc.name} logs its listener's reconnect")

                async def ready(proc: Proc = proc) -> bool:
                    return (await readiness(http, proc)) == (200, {"database": True, "bus": True, "signals": True})

                await eventually(ready, f"{proc.name}'s /readyz turns 200 again")
            began = loop.time()
            accepted = await answer(http, api, first, first_request, "Ship it.")
            assert accepted.status_code == 202, accepted.text
            assert loop.time() - began < 1, "accepted within a second"
            assert await answered_with(http, api, first) == ["Ship it."], "delivered once; the refused try never"

            # the executor cannot answer: refused once the reply timeout is over, and never acted on
            worker.popen.send_signal(signal.SIGSTOP)
            try:
                began = loop.time()
                refused(await answer(http, api, second, second_request, "Unheard."))
                assert REPLY_TIMEOUT_S <= loop.time() - began < REPLY_TIMEOUT_S + 3
            finally:
                worker.popen.send_signal(signal.SIGCONT)

            async def dropped() -> bool:
                return logged(worker, "signal_expired")

            await eventually(dropped, "the resumed worker drops the answer it got too late")
            assert (await http.get(f"{api.url}/v1/runs/{second}")).json()["status"] == "awaiting_input"
            accepted = await answer(http, api, second, second_request, "Heard.")
            assert accepted.status_code == 202, accepted.text
            assert await answered_with(http, api, second) == ["Heard."]

        for proc in (api, worker):
            assert proc.alive()
            assert logged(proc, "redis_signals_lost")
            text = proc.log.read_text()
            assert "Traceback" not in text and "pubsub connection not set" not in text, text[-3000:]
    except BaseException:
        print(cluster.dump_logs())
        raise
    finally:
        cluster.stop_all()
