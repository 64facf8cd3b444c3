"""Benchmark: a chain step of 3 parallel branches vs the same 3 agents one after another.

Each agent's model takes 200 ms before it answers (`fake/t2-f200`). A parallel
step should take about 200 ms, three sequential steps about 600 ms. Prints the
median of a few repeats and writes bench/results/chain_parallel.json.

    .venv/bin/python bench/chain_parallel.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.settings import Settings
from app.main import create_app

MODEL = "fake/t2-f200"
NAMES = ("a", "b", "c")


def chain(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "bench",
        "kind": "chain",
        "members": [{"name": n, "model": MODEL} for n in NAMES],
        "steps": steps,
    }


async def step_seconds(client: httpx.AsyncClient, spec: dict[str, Any]) -> float:
    run = (await client.post("/v1/runs/wait", json={"task": "go", "team": spec})).json()
    assert run["status"] == "succeeded", run
    page = await client.get(f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"})
    events = page.json()["data"]

    def at(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["at"].replace("Z", "+00:00"))

    first = next(e for e in events if e["type"] == "step.started")
    last = [e for e in events if e["type"] == "step.completed"][-1]
    return (at(last) - at(first)).total_seconds()


async def main(repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            log_level="WARNING",
            seed_demo=False,
        )
        app = create_app(settings)
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://127.0.0.1") as client,
        ):
            parallel = chain([{"parallel": [{"agent": n} for n in NAMES]}])
            sequential = chain([{"agent": n} for n in NAMES])
            par = [await step_seconds(client, parallel) for _ in range(repeats)]
            seq = [await step_seconds(client, sequential) for _ in range(repeats)]
    result = {
        "parallel_step_s": statistics.median(par),
        "sequential_steps_s": statistics.median(seq),
        "model_latency_s": 0.2,
    }
    result["parallel_over_one_call"] = result["parallel_step_s"] / 0.2
    result["speedup"] = result["sequential_steps_s"] / result["parallel_step_s"]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    figures = asyncio.run(main(parser.parse_args().repeats))
    print("chain step of 3 agents, each model call 200 ms (median of repeats)")
    ratio = figures["parallel_over_one_call"]
    print(f"  parallel group:        {figures['parallel_step_s'] * 1000:7.1f} ms   ({ratio:.2f} x one call)")
    print(f"  three sequential steps:{figures['sequential_steps_s'] * 1000:7.1f} ms")
    print(f"  speed-up:              {figures['speedup']:7.2f} x")
    out = Path(__file__).resolve().parent / "results" / "chain_parallel.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
