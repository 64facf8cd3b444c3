"""Issue 7's benchmark suite: SwarmDirector's token path against the floor, side by side.

Starts the fake model server (``app/dev/fake_llm.py``), SwarmDirector
(``swarmdirector serve`` on a fresh SQLite file, persistence on; or, with
``--backend distributed``, on a fresh PostgreSQL database and Redis prefix,
``--processes`` API processes on one port), the load
client and the floor, then runs each workload's repeats on both sides in
turn (alternating which goes first), and prints one table: each figure,
the floor's, their ratio, the target and whether it is met. Writes every
raw figure and the environment to ``bench/results/bench-<time>.json``.

    W1  one run, 4 replies x 500 tokens, no delay (fake-t500): tokens/s
    W2  N concurrent runs, 2 replies x 64 tokens at 20 ms (fake-t64-d20)
    W3  sequential one-token runs (fake-t1): request -> first event / finished
    W4  one run watched by 1,000 SSE watchers: gaps at each watcher, CPU per 1,000 events, exactly once
    W5  10,000 idle SSE connections: memory per connection, /healthz latency while they are held
    W6  W1's team stored, streamed as our SSE, as Chat Completions and as AG-UI in turn: CPU per token,
        each dialect against our SSE (issue 22; bench/dialects.py)
    W7  1,000 runs parked for a person in one embedded server process: memory per parked run, and
        the live-run limit untouched (issue 24; bench/parked.py)

W4 and W5 have no floor (bare AutoGen has no watchers), run each repeat on a fresh embedded
server of their own, and are left out with the distributed backend (bench/watching.py). W6 runs
on the W1-W3 server and has no floor either: its floor column is our own SSE route. W7 runs on
a fresh embedded server of its own, has no floor, and is left out with the distributed backend.

    .venv/bin/python bench/run.py [--only W1,W2] [--repeats 3] [--n 50,200] [--profile [W1|W2|W3]]
    .venv/bin/python bench/run.py --only W4,W5 [--w4-watchers 1000] [--w5-connections 10000]
    .venv/bin/python bench/run.py --only W6 [--w6-runs 5] [--w6-repeats 3]
    .venv/bin/python bench/run.py --only W7 [--w7-runs 1000]
    .venv/bin/python bench/run.py --only W2 --processes 2      # distributed, SWARM_PROCESSES=2
    .venv/bin/python bench/run.py --patches-off autogen_untraced  # a patch of app/patches left out

With several server processes, the server's CPU seconds and resident sets are
sums over its process tree (the first process and the ones it started).

Everything listens on 127.0.0.1, every run has a time limit, and every
process started here is stopped by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dialects
import environment
import parked
import report
import watching
from servers import (
    BENCH,
    Backend,
    BenchError,
    DistributedStore,
    Proc,
    Worker,
    cpu_s,
    machine_cpu_s,
    raise_fd_limit,
    reset_peaks,
    start_fake_llm,
    start_swarmdirector,
    start_worker,
    sum_fd_count,
    sum_peak_kb,
    sum_rss_kb,
    tree_pids,
    wait_http,
    wait_listening,
)
from workloads import WARMUP, Batch, Timeline, figures

SETTLE_S = 0.5  # after a batch, before reading CPU: the server finishes writing its events


def batches(args: argparse.Namespace) -> list[tuple[str, Batch, int]]:
    """(label, batch, repeats) in the order they run."""
    out: list[tuple[str, Batch, int]] = []
    if "W1" in args.only:
        out.append(("W1", Batch("fake-t500", replies=4, words=500), args.repeats))
    if "W2" in args.only:
        for n in args.n:
            out.append((f"W2 N={n}", Batch("fake-t64-d20", replies=2, words=64, concurrency=n), args.w2_repeats))
    if "W3" in args.only:
        out.append(("W3", Batch("fake-t1", replies=1, words=1, rounds=args.w3_runs, timeout_s=30), args.repeats))
    return out


class Bench:
    def __init__(self, tmp: Path, log_level: str, backend: Backend | None = None, *, patches_off: str = "") -> None:
        self.backend = backend or Backend()
        self.procs: list[Proc] = []
        self.patches_off = patches_off
        try:
            self._start(tmp, log_level)
        except BaseException:
            self.stop()
            raise
        self.idle_kb: dict[str, int] = {}

    def _start(self, tmp: Path, log_level: str) -> None:
        self.fake, fake_port = start_fake_llm(tmp)
        self.fake_port = fake_port
        self.procs.append(self.fake)
        self.server, self.port = start_swarmdirector(
            tmp, fake_port, log_level, self.backend, patches_off=self.patches_off
        )
        self.procs.append(self.server)
        self.floor = start_worker("floor", "floor.py", ["--base-url", f"http://127.0.0.1:{fake_port}/v1"], tmp)
        self.procs.append(self.floor)
        wait_http(self.fake, f"http://127.0.0.1:{fake_port}/health")
        wait_http(self.server, f"http://127.0.0.1:{self.port}/healthz", timeout=90)
        if self.backend.processes > 1:
            wait_listening(self.server, self.port, self.backend.processes)
        self.server_pids = tree_pids(self.server.pid)
        if len(self.server_pids) < self.backend.processes:
            raise BenchError(f"the server runs {len(self.server_pids)} processes, not {self.backend.processes}")
        self.load = start_worker("load client", "load.py", ["--port", str(self.port)], tmp)
        self.procs.append(self.load)
        self.floor.wait_ready()
        self.load.wait_ready()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def side(self, name: str) -> tuple[Worker, list[int]]:
        """The worker that drives a side, and the processes doing its work (the server's whole tree)."""
        if name == "server":
            pids = tree_pids(self.server.pid)
            if sorted(pids) != sorted(self.server_pids):
                raise BenchError(f"the server's processes changed: {self.server_pids} -> {pids}")
            return self.load, pids
        return self.floor, [self.floor.pid]

    def warm_up(self) -> None:
        warm = Batch(*WARMUP)
        for name in ("server", "floor"):
            batch = warm
            if name == "server" and self.backend.processes > 1:
                # every process builds a team and calls the model at least once, whichever claims the run
                batch = Batch(*WARMUP, concurrency=4 * self.backend.processes, rounds=2)
            runs = self.side(name)[0].request(asdict(batch), timeout=120)
            failed = [r for r in runs if r["status"] != "succeeded"]
            if failed:
                raise BenchError(f"the warm-up run on the {name} side failed: {failed[0]}")
        time.sleep(SETTLE_S)
        self.idle_kb = {name: sum_rss_kb(self.side(name)[1]) for name in ("server", "floor")}

    def measure(self, name: str, batch: Batch) -> dict[str, Any]:
        """One batch on one side, with the /proc figures of the processes that did the work."""
        worker, target = self.side(name)
        reset_peaks(target)
        pids = [*target, self.load.pid, self.fake.pid]
        store = self.backend.store if name == "server" else None
        store_before = store.cpu_by_pid() if store is not None else {}
        before = [cpu_s(p) for p in pids]
        machine = machine_cpu_s()
        started = time.perf_counter()
        raw = worker.request(asdict(batch), timeout=batch.timeout_s * batch.rounds + 60)
        wall = time.perf_counter() - started
        time.sleep(SETTLE_S)
        used = [cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
        busy, steal = (b - a for a, b in zip(machine, machine_cpu_s(), strict=True))
        store_after = store.cpu_by_pid() if store is not None else {}
        by_process, (load_s, fake_s) = used[: len(target)], used[len(target) :]
        target_s = sum(by_process)
        fig = figures(batch, [Timeline(**r) for r in raw])
        peak = sum_peak_kb(target)
        fig.update(
            cpu_s=target_s,
            cpu_us_per_token=target_s / fig["tokens"] * 1e6 if fig["tokens"] else None,
            peak_rss_mb=peak / 1024,
            kb_per_live_run=(peak - self.idle_kb[name]) / max(1, fig["max_live_runs"]),
            fake_llm_cpu_share=fake_s / wall,
            batch_wall_s=wall,
            # the whole machine (every CPU) over the batch and its settling time: beside the
            # processes measured here, how busy other work kept the cores
            machine_busy_s=busy,
            machine_steal_s=steal,
        )
        if name == "server":
            fig.update(
                client_cpu_s=load_s,
                client_cpu_share=load_s / wall,
                server_fds=sum_fd_count(target),
                server_processes=len(target),
                server_cpu_s_by_process=by_process,
            )
        if store_after:
            # a process that started during the batch counts whole; one that ended is missed
            for kind, now in store_after.items():
                was = store_before.get(kind, {})
                fig[f"{kind}_cpu_s"] = sum(cpu - was.get(pid, 0.0) for pid, cpu in now.items())
        known = sum(used) + fig.get("postgres_cpu_s", 0.0) + fig.get("redis_cpu_s", 0.0)
        fig["other_cpu_s"] = busy - known  # other work, the harness, kernel time no process was charged
        return fig


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    result: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    result["environment"] = environment.describe()
    result["config"] = {k: v for k, v in vars(args).items() if k != "out"}
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]] = []
    result["workloads"] = {}
    backend = Backend(args.backend, args.processes)
    if backend.distributed:
        backend.store = DistributedStore(args.postgres, args.redis_url)
        backend.store.create()
    try:
        with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
            run_bench(args, Path(tmp), backend, result, sections)
    finally:
        if backend.store is not None:
            try:
                result["server_store_removed"] = backend.store.drop()
            except Exception as exc:  # never hide what stopped the run; say what is left behind
                left = f"database {backend.store.name}, Redis keys {backend.store.prefix}:*"
                print(f"bench: could not remove {left}: {exc}", file=sys.stderr)
                result["server_store_removed"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["environment"]["loadavg_after"] = environment.loadavg()
    result["table"] = report.table(sections, server_processes=backend.processes)
    result["duration_s"] = round(time.monotonic() - began, 1)
    return result


def run_bench(
    args: argparse.Namespace,
    tmp: Path,
    backend: Backend,
    result: dict[str, Any],
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]],
) -> None:
    bench = Bench(tmp, args.server_log_level, backend, patches_off=args.patches_off)
    result["server"] = {**backend.describe(), "pids": bench.server_pids}
    try:
        bench.warm_up()
        result["idle_rss_mb"] = {k: v / 1024 for k, v in bench.idle_kb.items()}
        for label, batch, repeats in batches(args):
            per_side: dict[str, list[dict[str, Any]]] = {"server": [], "floor": []}
            for i in range(repeats):
                order = ("server", "floor") if i % 2 == 0 else ("floor", "server")
                for name in order:
                    fig = bench.measure(name, batch)
                    per_side[name].append(fig)
                    progress(label, i, repeats, name, fig)
            summary = {name: report.summarise(figs) for name, figs in per_side.items()}
            result["workloads"][label] = {
                "batch": asdict(batch),
                **{k: {"summary": summary[k], "repeats": v} for k, v in per_side.items()},
            }
            sections.append((label, batch.concurrency, summary["server"], summary["floor"]))
        if "W6" in args.only:
            dialects.run_w6(bench, args.w6_runs, args.w6_repeats, result, sections)
        watch_workloads(args, tmp, bench, result, sections)
        if "W7" in args.only:
            parked.run_w7(tmp, args.w7_runs, args.server_log_level, args.patches_off, result, sections)
        if args.profile:
            import profile_server

            result["profile"] = profile_server.profile(bench, args, Path(args.out).with_suffix(".pyspy.txt"))
        result["server_log_tail"] = bench.server.log_tail(5)
    finally:
        bench.stop()


def watch_workloads(
    args: argparse.Namespace,
    tmp: Path,
    bench: Bench,
    result: dict[str, Any],
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]],
) -> None:
    """W4 and W5, each repeat on a fresh server with a watcher client of its own; no floor."""
    plan = {"W4": (args.w4_watchers, args.w4_repeats), "W5": (args.w5_connections, args.w5_repeats)}
    for name in [w for w in plan if w in args.only]:
        n, repeats = plan[name]
        label = f"{name} N={n}"
        figs = []
        for i in range(repeats):
            stage_args = (bench.fake_port, args.server_log_level, args.patches_off, n + 64)
            with watching.Stage(tmp / f"{name}-{i + 1}", *stage_args) as stage:
                if name == "W4":
                    figs.append(watching.fanout(stage, n, args.w4_words, args.w4_delay_ms))
                else:
                    figs.append(watching.idle(stage, n, args.w5_probes))
            watch_progress(label, i, repeats, figs[-1])
        summary = watching.summarise(figs)
        result["workloads"][label] = {"server": {"summary": summary, "repeats": figs}}
        sections.append((label, n, summary, None))


def watch_progress(label: str, i: int, repeats: int, fig: dict[str, Any]) -> None:
    def num(key: str) -> str:
        return "—" if fig.get(key) is None else f"{fig[key]:.1f}"

    if "gap_p99_ms" in fig:
        bits = [
            f"gap p99 {num('gap_p99_ms')} ms",
            f"{num('cpu_ms_per_1000_events')} ms CPU per 1,000 events",
            f"lost/duplicated: {fig['lost']}/{fig['duplicated']}",
        ]
    else:
        bits = [
            f"{fig['attached']} held",
            f"{num('kib_per_connection')} KiB each",
            f"/healthz p99 {num('healthz_p99_ms')} ms",
        ]
    if fig["errors"]:
        bits.append(f"{fig['errors']} errors {fig['error_samples']}")
    print(f"  {label} {i + 1}/{repeats}: " + ", ".join(bits), file=sys.stderr, flush=True)


def progress(label: str, i: int, repeats: int, name: str, fig: dict[str, Any]) -> None:
    bits = [f"{fig['tokens']}/{fig['expected_tokens']} tokens", f"{fig['tokens_per_s']:,.0f} tok/s"]
    if fig["ttft_p99_ms"] is not None:
        bits.append(f"ttft p99 {fig['ttft_p99_ms']:.0f} ms")
    if fig["finished_p50_ms"] is not None:
        bits.append(f"finished p50 {fig['finished_p50_ms']:.1f} ms")
    if fig["errors"]:
        bits.append(f"{fig['errors']} errors {fig['error_samples']}")
    print(f"  {label} {i + 1}/{repeats} {name:6}: " + ", ".join(bits), file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--only", help="workloads to run, e.g. W1,W3 (default: all; W1-W3 with the distributed backend)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats of W1 and W3 (default 3)")
    parser.add_argument("--w2-repeats", type=int, default=1, help="repeats of each W2 size (default 1)")
    parser.add_argument("--n", default="50,200", help="W2 concurrent runs, comma-separated (default 50,200)")
    parser.add_argument("--w3-runs", type=int, default=100, help="sequential runs of W3 (default 100)")
    parser.add_argument("--w4-watchers", type=int, default=1000, help="SSE watchers of W4's run (default 1000)")
    parser.add_argument("--w4-words", type=int, default=400, help="deltas of W4's answer (default 400)")
    parser.add_argument("--w4-delay-ms", type=int, default=25, help="ms between W4's deltas (default 25)")
    parser.add_argument("--w4-repeats", type=int, default=1, help="repeats of W4 (default 1)")
    parser.add_argument("--w5-connections", type=int, default=10000, help="idle SSE connections of W5 (default 10000)")
    parser.add_argument("--w5-probes", type=int, default=150, help="/healthz probes 0.1 s apart (default 150)")
    parser.add_argument("--w5-repeats", type=int, default=1, help="repeats of W5 (default 1)")
    parser.add_argument("--w6-runs", type=int, default=5, help="sequential runs per W6 batch, each way (default 5)")
    parser.add_argument("--w6-repeats", type=int, default=3, help="repeats of W6's three ways (default 3)")
    parser.add_argument("--w7-runs", type=int, default=1000, help="runs W7 parks at once (default 1000)")
    parser.add_argument("--server-log-level", default="INFO", help="SwarmDirector's SWARM_LOG_LEVEL (default INFO)")
    parser.add_argument(
        "--patches-off",
        default="",
        metavar="NAME,NAME",
        help="measuring aid: SWARM_PATCHES_OFF for the server, the app/patches left out (default: none)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="W2",
        choices=("W1", "W2", "W3"),
        help="then profile the server with py-spy under W2 at the largest N (or W1 x 5 runs, or W3's runs); "
        "needs py-spy",
    )
    parser.add_argument(
        "--backend",
        choices=("embedded", "distributed"),
        help="the server's mode: embedded (SQLite, the default) or distributed (PostgreSQL + Redis, "
        "a fresh database and key prefix, removed at the end); --processes above 1 implies distributed",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="SWARM_PROCESSES: API processes sharing the server's port (default 1); their CPU and memory are summed",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="distributed: a maintenance database to create and drop the benchmark's database from",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="distributed: SWARM_REDIS_URL")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parser.add_argument("--out", default=str(BENCH / "results" / f"bench-{stamp}.json"), help="the JSON to write")
    args = parser.parse_args(argv)
    distributed = args.backend == "distributed" or args.processes > 1
    only = args.only or ("W1,W2,W3" if distributed else "W1,W2,W3,W4,W5,W6,W7")
    args.only = [w.strip().upper() for w in only.split(",") if w.strip()]
    args.n = [int(n) for n in str(args.n).split(",") if n.strip()]
    unknown = set(args.only) - {"W1", "W2", "W3", "W4", "W5", "W6", "W7"}
    counts: tuple[int, ...] = (args.w4_watchers, args.w4_words, args.w4_repeats)
    counts += (args.w5_connections, args.w5_probes, args.w5_repeats, args.w6_runs, args.w6_repeats, args.w7_runs)
    if unknown or min(args.repeats, args.w2_repeats, args.w3_runs, args.processes, *args.n, *counts) < 1:
        parser.error(f"unknown workloads {sorted(unknown)}" if unknown else "counts must be at least 1")
    if distributed and {"W4", "W5", "W7"} & set(args.only):
        parser.error("W4, W5 and W7 measure one embedded server process: leave them out with the distributed backend")
    if args.processes > 1:
        if args.backend == "embedded":
            parser.error("--processes above 1 needs the distributed backend (embedded servers cannot share)")
        if args.profile:
            parser.error("--profile samples one server process: use it with --processes 1")
    args.backend = args.backend or ("distributed" if args.processes > 1 else "embedded")
    return args


def main() -> int:
    args = parse_args()
    # a stopped harness still stops what it started (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_fd_limit()  # the server and the clients inherit it: W5 holds 10,000 sockets at each end
    print(f"issue-7 benchmark: {', '.join(args.only)} (progress on stderr)", file=sys.stderr, flush=True)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.render(result["table"]))
    for line in environment.notes(result):
        print(line)
    print(f"raw figures: {out}  ({result['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
