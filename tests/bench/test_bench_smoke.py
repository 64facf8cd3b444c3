"""The issue-7 benchmark harness at a tiny size, so it cannot rot: not a benchmark, and no figure is judged.

Runs bench/run.py as `make bench` does (fake model server, `swarmdirector serve`, load client and floor
as real processes on loopback) with W2 at N=3 and W3 with 3 runs, and checks that it writes a
well-formed result in which every token was delivered on both sides; then W4 and W5 with 20
watchers and 50 idle connections, every event delivered exactly once.
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


def test_watcher_workloads_run_at_a_tiny_size(tmp_path: Path) -> None:
    """W4 and W5 as `make bench` runs them, with 20 watchers and 50 idle connections."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, "bench/run.py", "--only", "W4,W5", "--w4-watchers", "20", "--w4-words", "30"]
    argv += ["--w4-delay-ms", "5", "--w5-connections", "50", "--w5-probes", "3", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W4 N=20" in done.stdout and "W5 N=50" in done.stdout

    result = json.loads(out.read_text())
    assert set(result["workloads"]) == {"W4 N=20", "W5 N=50"}
    w4 = result["workloads"]["W4 N=20"]["server"]["summary"]
    assert w4["run_status"] == "succeeded" and w4["terminal_events"] == ["run.completed"]
    assert w4["watchers"] == w4["with_terminal"] == 20
    assert (w4["lost"], w4["duplicated"], w4["out_of_order"], w4["errors"]) == (0, 0, 0, 0), w4["error_samples"]
    assert w4["deltas_per_watcher_min"] >= 30 and w4["delivered_events"] >= 20 * 30
    assert w4["gap_p99_ms"] > 0 and w4["cpu_ms_per_1000_events"] > 0 and w4["spread_p99_ms"] is not None
    w5 = result["workloads"]["W5 N=50"]["server"]["summary"]
    assert w5["attached"] == 50 and w5["errors"] == 0, w5["error_samples"]
    assert w5["server_fds_held"] >= 50 and w5["probes"] == 3 and w5["healthz_p50_ms"] > 0
    assert w5["probes_opening"] >= 1 and w5["healthz_opening_max_ms"] > 0
    assert w5["server_rss_held_mb"] > 0 and w5["kib_per_connection"] is not None
    rows = [row for row in result["table"] if row["workload"].startswith(("W4", "W5"))]
    assert rows and all(row["floor"] == "—" for row in rows)
    assert {row["met"] for row in rows} == {"yes", "—"}


def test_lost_duplicated_and_reordered_events_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """W4's check is a figure, so it must see what went wrong: a gap, a repeat, a step back."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import watching

    whole = {"seqs": [1, 2, 3, 4, 5], "deltas": [1.0, 1.1, 1.2], "terminal": "run.completed", "lagged": 0}
    raw = [
        {**whole, "error": None},
        {**whole, "seqs": [1, 2, 4, 5], "error": None},  # seq 3 lost
        {**whole, "seqs": [1, 2, 3, 3, 4, 5], "error": None},  # seq 3 twice
        {**whole, "seqs": [1, 3, 2, 4], "terminal": None, "error": "cut"},  # out of order, no terminal event
    ]
    fig = watching.fanout_figures(raw, last_seq=5, after_seq=2)
    assert (fig["lost"], fig["duplicated"], fig["out_of_order"]) == (1 + 1, 1, 1 + 1)
    assert fig["with_terminal"] == 3 and fig["errors"] == 1 and fig["error_samples"] == ["cut"]
    assert fig["delivered_events"] == 3 + 2 + 4 + 2
    assert abs(fig["gap_p50_ms"] - 100.0) < 1e-6 and fig["spread_p99_ms"] == 0.0
