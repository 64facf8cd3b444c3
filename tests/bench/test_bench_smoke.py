"""The issue-7 benchmark harness at a tiny size, so it cannot rot: not a benchmark, and no figure is judged.

Runs bench/run.py as `make bench` does (fake model server, `swarmdirector serve`, load client and floor
as real processes on loopback) with W2 at N=3 and W3 with 3 runs, and checks that it writes a
well-formed result in which every token was delivered on both sides.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
COLUMNS = {"workload", "figure", "swarmdirector", "floor", "ratio", "target", "met"}


def test_bench_harness_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "bench/run.py", "--only", "W2,W3", "--n", "3", "--w3-runs", "3", "--repeats", "1"]
    done = subprocess.run(
        [*argv, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| workload" in done.stdout and "SwarmDirector" in done.stdout

    result = json.loads(out.read_text())
    assert set(result["workloads"]) == {"W2 N=3", "W3"}
    for label, workload in result["workloads"].items():
        for side in ("server", "floor"):
            summary = workload[side]["summary"]
            assert summary["all_delivered"], (label, side, summary["error_samples"])
            assert summary["errors"] == 0
            assert summary["tokens"] == summary["expected_tokens"] > 0
    w2 = result["workloads"]["W2 N=3"]["server"]["summary"]
    assert w2["tokens"] == 3 * 2 * 64
    assert w2["ttft_p99_ms"] > 0 and w2["gap_p99_ms"] > 0 and w2["cpu_s"] > 0 and w2["peak_rss_mb"] > 0
    w3 = result["workloads"]["W3"]["server"]["summary"]
    assert 0 < w3["first_event_p50_ms"] <= w3["finished_p50_ms"]
    assert result["table"] and all(set(row) == COLUMNS for row in result["table"])
    assert result["environment"]["cpu_count"] and result["environment"]["packages"]["autogen-agentchat"]
