"""W7: cheap waiting (issue 24). Runs parked for a person cost the server a row, not a run.

One fresh embedded server process (``swarmdirector serve``, SQLite), the live-run limit at its
default (``SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL`` unset: 20); the parked-run limit above the runs
parked here, so that it is not what a later run meets. The team asks: an assistant (the in-process
fake model, ``fake/t5``) speaks, then a ``user_proxy``'s turn parks the run.

1. A warm-up: ``WARMUP`` runs parked and cancelled (the first teams built, the code paths taken),
   then the server's resident set once it has settled (the server collects garbage fully after
   2 s without live runs: ``app/core/gc_tuning.py``).
2. ``--w7-runs`` runs (default 1,000) started, ``IN_FLIGHT`` at a time (fewer than the live-run
   limit: a run is live until it parks), each waited for until it is ``awaiting_input``, in two
   halves; after each half the resident set again, settled, and at the end ``swarm_runs_live`` of
   ``/metrics`` (runs with a task here). The growth per parked run over all of them is the issue's
   figure (target: under 20 KB); the second half's growth per run is printed beside it, since a
   process's resident set also holds what fills once and then stays level (SQLite's page caches, up to
   2 MB a connection; the allocator's arenas after a burst of runs): measured at 1,000 and at 2,000
   runs, the resident set with them parked was the same.
3. With all of them parked, ``LIVE_LIMIT`` runs of a team that does not ask started at once: the
   live-run limit is untouched when every one is accepted and completes.
4. Every parked run cancelled: the clean-up, timed.
5. Step mode's cost (the stop after each turn and the checkpoint written with its message, which runs
   with ``retries`` and teams with tools that need approval pay): ``STEP_RUNS`` runs of
   ``STEP_TURNS`` one-token turns without retries and as many with, in rounds that alternate the two;
   the server's CPU per turn of each.

Figures are printed, never judged here. The server is stopped by its pid at the end.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from servers import BenchError, Proc, cpu_s, free_port, rss_kb, server_env, wait_http

WARMUP = 20
IN_FLIGHT = 8  # runs being started at once: live until they park, so well under the live-run limit
LIVE_LIMIT = 20  # SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL's default
POLL_S = 0.02
RUN_TIMEOUT_S = 60.0  # for a run to park, or a check run to finish
SETTLE_READS = 5  # resident-set readings 0.5 s apart that must agree before one is taken
SETTLE_MIN_S = 3.0  # past the server's idle collection (2 s without live runs)
SETTLE_MAX_S = 60.0
SETTLE_KB = 256  # readings within this much of each other agree
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
STEP_TURNS = 10  # turns of a run of the step-mode figure
STEP_RUNS = 40  # runs per side of it, in rounds alternating the sides


def asking_team() -> dict[str, Any]:
    members = [{"name": "helper", "model": "fake/t5"}, {"name": "human", "kind": "user_proxy"}]
    return {"name": "asking", "kind": "round_robin", "members": members, "termination": {"max_messages": 4}}


def turning_team() -> dict[str, Any]:
    """Two agents taking ``STEP_TURNS`` one-token turns: the run path with little else."""
    members = [{"name": n, "model": "fake/t1"} for n in ("a1", "a2")]
    termination = {"max_messages": STEP_TURNS + 1}
    return {"name": "turning", "kind": "round_robin", "members": members, "termination": termination}


def plain_team() -> dict[str, Any]:
    members = [{"name": n, "model": "fake/t5"} for n in ("a1", "a2")]
    return {"name": "plain", "kind": "round_robin", "members": members, "termination": {"max_messages": 3}}


class Server:
    """A fresh embedded server for W7, its admission limits as shipped but for the rate and the parked runs."""

    def __init__(self, tmp: Path, log_level: str, patches_off: str, runs: int) -> None:
        tmp.mkdir(parents=True)
        self.port = free_port()
        exe = Path(sys.executable).with_name("swarmdirector")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]
        argv += ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        env = server_env(tmp, 0, log_level, patches_off=patches_off)
        del env["SWARM_MAX_LIVE_RUNS_PER_PRINCIPAL"]  # the default, 20: the limit W7 shows untouched
        env["SWARM_MAX_PARKED_RUNS_PER_PRINCIPAL"] = str(runs + WARMUP + LIVE_LIMIT)
        self.proc = Proc("SwarmDirector (W7)", argv, tmp / "server.log", env=env, cwd=tmp)
        try:
            wait_http(self.proc, f"{self.url}/healthz", timeout=90)
        except BaseException:
            self.proc.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=RUN_TIMEOUT_S) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def runs_live(self) -> float:
        """``swarm_runs_live`` of ``/metrics``: runs with a task in the process (queued or going)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("swarm_runs_live "):
                    return float(line.split()[1])
        raise BenchError("W7: no swarm_runs_live in /metrics")

    def start(self, team: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = {"task": "Plan the release.", "team": team, "input_timeout_s": 3000, "timeout_s": 600}
        return self.http("POST", "/v1/runs", body)

    def until(self, run_id: str, done: Callable[[str], bool]) -> str:
        """Poll the run until ``done(status)``; its status, or ``stuck in <status>`` after the timeout."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            status = self.http("GET", f"/v1/runs/{run_id}")[1].get("status", "?")
            if done(status):
                return str(status)
            if time.monotonic() > deadline:
                return f"stuck in {status}"
            time.sleep(POLL_S)

    def park_one(self, _: int = 0) -> tuple[str | None, str]:
        """Start an asking run and wait for it to park: its id and status (``awaiting_input``), or why not."""
        code, run = self.start(asking_team())
        if code != 202:
            return None, f"{code} {run.get('code')}"
        return run["id"], self.until(run["id"], lambda s: s == "awaiting_input" or s in TERMINAL)

    def complete_one(self, _: int = 0) -> str:
        code, run = self.start(plain_team())
        if code != 202:
            return f"refused {code} {run.get('code')}"
        return self.until(run["id"], lambda s: s in TERMINAL)

    def turn_one(self, retries: int) -> str:
        body = {"task": "Count.", "team": turning_team(), "retries": retries, "timeout_s": 600}
        code, run = self.http("POST", "/v1/runs", body)
        if code != 202:
            return f"refused {code} {run.get('code')}"
        return self.until(run["id"], lambda s: s in TERMINAL)

    def step_cost(self, pool: ThreadPoolExecutor) -> tuple[float, float, list[str]]:
        """Server CPU per turn of runs without retries and with (step mode: a stop and a checkpoint per
        turn), ``STEP_RUNS`` each, in rounds that alternate the two; and the runs that did not succeed."""
        cpu = {0: 0.0, 1: 0.0}
        bad: list[str] = []
        rounds = 4
        for _ in range(rounds):
            for retries in (0, 1):
                cpu0 = cpu_s(self.proc.pid)
                bad += [s for s in pool.map(self.turn_one, [retries] * (STEP_RUNS // rounds)) if s != "succeeded"]
                cpu[retries] += cpu_s(self.proc.pid) - cpu0
        turns = STEP_RUNS * STEP_TURNS
        return cpu[0] / turns * 1000, cpu[1] / turns * 1000, bad

    def cancel(self, run_id: str) -> str:
        code, run = self.http("POST", f"/v1/runs/{run_id}/cancel")
        return str(run.get("status")) if code in (200, 202) else f"{code} {run.get('code')}"

    def settled_rss_kb(self) -> int:
        """The server's resident set once it has stopped moving (and its idle collection has run)."""
        started = time.monotonic()
        reads: list[int] = []
        while True:
            reads = [*reads[-(SETTLE_READS - 1) :], rss_kb(self.proc.pid)]
            waited = time.monotonic() - started
            steady = len(reads) == SETTLE_READS and max(reads) - min(reads) <= SETTLE_KB
            if (steady and waited >= SETTLE_MIN_S) or waited >= SETTLE_MAX_S:
                return reads[-1]
            time.sleep(0.5)


def parked(tmp: Path, runs: int, log_level: str, patches_off: str) -> dict[str, Any]:
    """W7's figures, on a server of its own."""
    with Server(tmp, log_level, patches_off, runs) as server, ThreadPoolExecutor(IN_FLIGHT) as pool:
        warm = list(pool.map(server.park_one, range(WARMUP)))
        not_warm = [s for _, s in warm if s != "awaiting_input"]
        if not_warm:
            raise BenchError(f"W7: warm-up runs did not park: {sorted(set(not_warm))[:3]}\n{server.proc.log_tail()}")
        list(pool.map(server.cancel, [run_id for run_id, _ in warm if run_id]))
        rss_before = server.settled_rss_kb()
        half = runs // 2
        cpu0, started = cpu_s(server.proc.pid), time.perf_counter()
        outcomes = list(pool.map(server.park_one, range(half)))
        park_s = time.perf_counter() - started
        park_cpu = cpu_s(server.proc.pid) - cpu0
        rss_half = server.settled_rss_kb()
        cpu0, started = cpu_s(server.proc.pid), time.perf_counter()
        outcomes += pool.map(server.park_one, range(runs - half))
        park_s += time.perf_counter() - started
        park_cpu += cpu_s(server.proc.pid) - cpu0
        ids = [run_id for run_id, status in outcomes if run_id and status == "awaiting_input"]
        rss_after = server.settled_rss_kb()
        live_while_parked = server.runs_live()
        after_runs = list(pool.map(server.complete_one, range(LIVE_LIMIT)))
        started = time.perf_counter()
        cancelled = list(pool.map(server.cancel, ids))
        cancel_s = time.perf_counter() - started
        left_live = server.runs_live()
        plain_turn_ms, step_turn_ms, step_errors = server.step_cost(pool)
    errors = [s for _, s in outcomes if s != "awaiting_input"]
    errors += [f"check run {s}" for s in after_runs if s != "succeeded"]
    errors += [f"cancel {s}" for s in cancelled if s != "cancelled"]
    errors += [f"step-mode run {s}" for s in step_errors]
    return {
        "runs": runs,
        "parked": len(ids),
        "park_s": park_s,
        "park_cpu_ms_per_run": park_cpu / runs * 1000,
        "server_rss_before_mb": rss_before / 1024,
        "server_rss_parked_mb": rss_after / 1024,
        "kb_per_parked_run": (rss_after - rss_before) / len(ids) if ids else None,
        "server_rss_half_mb": rss_half / 1024,
        "kb_per_parked_run_second_half": (rss_after - rss_half) / (runs - half) if len(ids) == runs else None,
        "runs_live_while_parked": live_while_parked,
        "live_limit": LIVE_LIMIT,
        "after_started": len(after_runs),
        "after_not_completed": sum(s != "succeeded" for s in after_runs),
        "cancelled": sum(s == "cancelled" for s in cancelled),
        "cancel_s": cancel_s,
        "runs_live_at_end": left_live,
        "turn_cpu_ms": plain_turn_ms,
        "step_turn_cpu_ms": step_turn_ms,
        "step_cpu_ms_per_turn": step_turn_ms - plain_turn_ms,
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
    }


def run_w7(
    tmp: Path,
    runs: int,
    log_level: str,
    patches_off: str,
    result: dict[str, Any],
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]],
) -> None:
    """W7 on a fresh server; its section has no floor (bare AutoGen keeps no parked runs)."""
    label = f"W7 parked N={runs}"
    fig = parked(tmp / "W7", runs, log_level, patches_off)
    result["workloads"][label] = {"server": {"summary": fig, "repeats": [fig]}}
    sections.append((label, runs, fig, None))
    per_run, second = fig["kb_per_parked_run"], fig["kb_per_parked_run_second_half"]
    bits = [
        f"{fig['parked']}/{runs} parked in {fig['park_s']:.1f} s",
        "—" if per_run is None else f"{per_run:.1f} KB each",
        "—" if second is None else f"{second:.1f} KB each of the second half",
        f"{fig['runs_live_while_parked']:.0f} live",
        f"{fig['after_started'] - fig['after_not_completed']}/{fig['after_started']} runs after them completed",
        f"a turn {fig['turn_cpu_ms']:.2f} ms CPU, {fig['step_turn_cpu_ms']:.2f} ms in step mode",
    ]
    if fig["errors"]:
        bits.append(f"{fig['errors']} errors {fig['error_samples']}")
    print(f"  {label}: " + ", ".join(bits), file=sys.stderr, flush=True)
