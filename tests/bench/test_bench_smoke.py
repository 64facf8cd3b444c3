"""The issue-7 benchmark harness at a tiny size, so it cannot rot: not a benchmark, and no figure is judged.

Runs bench/run.py as `make bench` does (fake model server, `swarmdirector serve`, load client and floor
as real processes on loopback) with W2 at N=3 and W3 with 3 runs, and checks that it writes a
well-formed result in which every token was delivered on both sides; then W4 and W5 with 20
watchers and 50 idle connections, every event delivered exactly once; then W6 with one run each way
(our SSE, Chat Completions, AG-UI), every token of each counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
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


def test_dialect_workload_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """W6 as `make bench` runs it, one run a way: every token of each way counted, each dialect against our SSE."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, "bench/run.py", "--only", "W6", "--w6-runs", "1", "--w6-repeats", "1", "--out", str(out)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W6 Chat Completions" in done.stdout and "W6 AG-UI" in done.stdout

    w6 = json.loads(out.read_text())["workloads"]["W6"]
    assert w6["skipped"] == {}, w6["skipped"]
    for way in ("sse", "chat", "agui"):
        summary = w6["by_dialect"][way]
        assert summary["errors"] == 0, (way, summary["error_samples"])
        assert summary["tokens"] == summary["expected_tokens"] == 4 * 500, way
        assert summary["cpu_us_per_token"] > 0 and summary["tokens_per_s"] > 0
    assert len(w6["server"]["repeats"]) == 3 and w6["server"]["summary"] == w6["by_dialect"]["sse"]
    assert set(w6["ratio_to_sse"]) == {"chat", "agui"}
    assert all(r["cpu_us_per_token"] > 0 for r in w6["ratio_to_sse"].values())
    rows = [row for row in json.loads(out.read_text())["table"] if row["workload"].startswith("W6")]
    verdicts = {row["workload"]: row["met"] for row in rows if row["figure"].startswith("server CPU per token")}
    assert verdicts["W6 our SSE"] == "—" and {verdicts["W6 Chat Completions"], verdicts["W6 AG-UI"]} <= {"yes", "NO"}


def test_dialect_frames_are_counted_from_the_servers_own_translators(monkeypatch: pytest.MonkeyPatch) -> None:
    """W6's load client counts a token per delta frame of the real translators, not the answer repeated at
    the end; a failed run is an error, with the server's words, in both dialects."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import load
    from workloads import Timeline

    from app.core.envelope import Envelope
    from app.protocols.agui.translator import Translator, frames
    from app.protocols.openai.translator import ChatTranslator

    at = datetime.now(UTC)

    def run(end: str, data: dict[str, object]) -> list[Envelope]:
        said = {"agent": "a1", "message_id": "m1"}
        envs = [Envelope("run_1", 1, "run.queued", at, {})]
        envs.append(Envelope("run_1", 2, "message.completed", at, {"agent": "user", "message_id": "m0", "text": "go"}))
        envs += [Envelope("run_1", 3 + i, "message.delta", at, {**said, "text": f"w{i} "}) for i in range(7)]
        envs.append(Envelope("run_1", 10, "message.completed", at, {**said, "text": "w0 w1 w2 w3 w4 w5 w6"}))
        return [*envs, Envelope("run_1", 11, end, at, data)]  # type: ignore[arg-type]

    def read(dialect: str, stream: bytes) -> Timeline:
        timeline = Timeline(t0=0.0)
        for frame in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
            if frame.startswith(b"data:") and load.DIALECTS[dialect][0](frame[5:].strip(), timeline, 1.0):
                break
        return timeline

    usage = {"prompt_tokens": 3, "completion_tokens": 7}
    done = run("run.completed", {"status": "succeeded", "result": {"text": "w0 w1 w2 w3 w4 w5 w6"}, "usage": usage})
    failed = run("run.failed", {"status": "failed", "error": {"code": "model_error", "message": "boom"}})
    for dialect, encode in (
        ("chat", lambda envs: ChatTranslator("chatcmpl-run_1", "bench_w6", 0).frames(envs)),
        ("agui", lambda envs: frames(Translator("thread-1", "run-1"), envs)),
    ):
        ok = read(dialect, encode(done))
        assert (ok.status, ok.error, len(ok.tokens), ok.finished) == ("succeeded", None, 7, 1.0), dialect
        bad = read(dialect, encode(failed))
        assert bad.status != "succeeded" and "boom" in (bad.error or ""), (dialect, bad)
        assert len(bad.tokens) == 7 and bad.finished == 1.0

    cut = read("chat", b'data: {"choices":[{"delta":{"reasoning_content":"x"}}]}\n\ndata: [DONE]\n\n')
    assert cut.status == "no_finish_reason"  # [DONE] without `finish_reason: stop` is no success
