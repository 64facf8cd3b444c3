"""`GET /metrics`: Prometheus text whose counters move as runs go."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.specs import agent, run_body, team


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def test_counters_move_as_runs_go(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    assert before[("swarm_runs_live", ())] == 0
    r = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t6", max_messages=3)))
    assert r.json()["status"] == "succeeded"
    broken = agent("broken", "fake/t3", model_options={"script": [{"error": "nope"}]})
    r = await client.post("/v1/runs/wait", json=run_body(team=team(kind="single", members=[broken], max_messages=None)))
    assert r.json()["status"] == "failed"
    after = await scrape(client)
    assert after[("swarm_runs_finished_total", (("status", "succeeded"),))] == 1
    assert after[("swarm_runs_finished_total", (("status", "failed"),))] == 1
    # two replies of 6 words each were streamed, one delta per word
    deltas = after[("swarm_events_published_total", (("type", "message.delta"),))]
    assert deltas >= 2 * 6
    assert after[("swarm_events_published_total", (("type", "run.completed"),))] == 1
    assert after[("swarm_model_call_seconds_count", (("model", "fake/t6"),))] == 2
    assert after[("swarm_model_call_failures_total", (("code", "model_error"),))] == 1
    assert after[("swarm_tokens_total", (("agent", "writer"), ("kind", "completion")))] > 0
    assert after[("swarm_runs_live", ())] == 0
