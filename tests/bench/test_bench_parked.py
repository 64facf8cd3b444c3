"""W7 (bench/parked.py) at a tiny size, so it cannot rot: not a benchmark, and no figure is judged.

Runs bench/run.py as `make bench` does with 30 parked runs: each parks, the runs started after them
under the default live-run limit complete, and every parked run is cancelled at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_parked_workload_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "bench/run.py", "--only", "W7", "--w7-runs", "30", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W7 parked N=30" in done.stdout and "server memory per parked run" in done.stdout

    result = json.loads(out.read_text())
    w7 = result["workloads"]["W7 parked N=30"]["server"]["summary"]
    assert w7["errors"] == 0, w7["error_samples"]
    assert w7["parked"] == w7["cancelled"] == 30
    assert w7["runs_live_while_parked"] == 0 and w7["runs_live_at_end"] == 0
    assert w7["after_started"] == w7["live_limit"] == 20 and w7["after_not_completed"] == 0
    assert w7["server_rss_parked_mb"] > 0 and w7["kb_per_parked_run"] is not None
    rows = [row for row in result["table"] if row["workload"].startswith("W7")]
    assert rows and all(row["floor"] == "—" for row in rows)
    # a figure, not a verdict: the memory row may say NO at this size
    verdicts = {row["figure"]: row["met"] for row in rows}
    assert verdicts["runs parked"] == verdicts["errors"] == "yes"


def test_w7_is_refused_with_the_distributed_backend() -> None:
    argv = [sys.executable, "bench/run.py", "--only", "W7", "--backend", "distributed"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "W7" in done.stderr
