"""The server's log: one JSON object per line, with request and run ids, and nothing per token."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.specs import agent, run_body, team


async def test_every_log_line_is_json_with_request_and_run_ids(tmp_path: Path) -> None:
    port = free_port()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    proc = spawn_serve(port, database_url, SWARM_LOG_LEVEL="INFO", SWARM_LOG_JSON="true")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_until_up(client, proc)
            ok = await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t40", max_messages=3)))
            broken = agent("broken", "fake/t3", model_options={"script": [{"error": "upstream down"}]})
            failed = await client.post(
                "/v1/runs/wait",
                json=run_body(team=team(kind="single", members=[broken], max_messages=None)),
                headers={"X-Request-ID": "req-abc-123"},
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all("event" in r and "level" in r and "timestamp" in r for r in records)
    events = [r["event"] for r in records]
    assert "started" in events and "stopped" in events
    ok_id, failed_id = ok.json()["id"], failed.json()["id"]
    finished = {r["run_id"]: r for r in records if r["event"] == "run_finished"}
    assert finished[ok_id]["status"] == "succeeded"
    assert finished[failed_id]["status"] == "failed"
    assert finished[failed_id]["request_id"] == "req-abc-123"
    assert any(r["event"] == "run_failed" and r.get("error_code") == "model_error" for r in records)
    # 2 replies of 40+ tokens each, and no line per token; AutoGen's own traceback of the failure is not repeated
    assert len(records) < 40
    assert not any("Traceback" in line for line in lines)
