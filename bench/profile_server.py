"""Where the server's CPU goes under W2 (or W1, or W3): py-spy on the running server, summarised.

``run.py --profile`` calls this after the measured repeats (py-spy takes CPU
of its own, so a profiled batch is never one of the table's figures). It
samples SwarmDirector during one more batch of W2 at the largest N (or five
W1 runs in a row, ``--profile W1``, or W3's sequential one-token runs,
``--profile W3``, where "per token" is per run), keeps the collapsed stacks
beside the JSON, and summarises them: the share of CPU samples per activity (what the
server was doing), per component (the innermost frame's package) and the
top functions by own time, the shares also as microseconds of server CPU
per delivered token.

py-spy is not a dependency: ``.venv/bin/pip install py-spy`` first.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servers import REPO, BenchError, cpu_s
from workloads import Batch, Timeline, figures

if TYPE_CHECKING:
    from run import Bench

# site-packages folder -> component; the innermost frame outside the standard library decides
PACKAGES = {
    "autogen_core": "autogen-core runtime",
    "opentelemetry": "opentelemetry (autogen-core tracing)",
    "autogen_agentchat": "autogen-agentchat",
    "autogen_ext": "autogen-ext model client",
    "openai": "openai SDK",
    "httpx": "httpx/httpcore",
    "httpcore": "httpx/httpcore",
    "h11": "httpx/httpcore",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic",
    "sqlalchemy": "SQLAlchemy",
    "aiosqlite": "aiosqlite",
    "asyncpg": "asyncpg",
    "redis": "redis-py",
    "sse_starlette": "sse-starlette",
    "starlette": "starlette/fastapi",
    "fastapi": "starlette/fastapi",
    "anyio": "starlette/fastapi",
    "uvicorn": "uvicorn",
    "structlog": "logging",
    "prometheus_client": "metrics",
}
# what the server was doing: the first activity any of whose markers is in a sample's stack
ACTIVITIES = (
    (
        "model client construction (httpx client + SSL context per agent)",
        ("ssl.py", "OpenAIChatCompletionClient.__init__"),
    ),
    (
        "distributed: Redis event streams and signals (redis-py, XADD/XREAD)",
        ("/redis/", "app/runtime/redis_bus.py", "app/runtime/signals.py"),
    ),
    ("distributed: run queue (claims, leases, sweeps)", ("app/runtime/queue.py", "app/runtime/cluster.py")),
    (
        "persistence (recorder, SQLAlchemy, SQLite thread or asyncpg; admission's writes too)",
        ("aiosqlite/", "asyncpg/", "sqlalchemy/", "recorder.py"),
    ),
    ("team construction (agents, runtime)", ("build_team",)),
    (
        "model call: HTTP streaming, chunk parsing (lean stream, openai, httpx)",
        ("app/engine/openai_stream.py", "app/engine/sse.py", "/openai/", "/httpx/", "/httpcore/", "/h11/"),
    ),
    ("SSE out (follow, sse-starlette, uvicorn send)", ("/sse_starlette/", "app/runs/sse.py", "app/runtime/streams.py")),
    (
        "HTTP in: requests, admission, middleware",
        ("app/runs/", "/fastapi/", "/starlette/", "app/core/", "httptools_impl.py"),
    ),
    ("SwarmDirector run loop (event translation, bus, guarded model client)", ("app/runtime/", "app/engine/")),
    ("AutoGen runtime and agents (per-chunk routing, no-op tracing)", ("/autogen_", "/opentelemetry/")),
)
LOOP = "event loop (uvloop's C code: polling, sockets, callbacks)"
APP = str(REPO / "app") + "/"
SITE = "/site-packages/"


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, file) of one py-spy frame, ``func (path:line)``."""
    func, _, rest = frame.rpartition(" (")
    return func, rest.rsplit(":", 1)[0]


def short(path: str) -> str:
    if SITE in path:
        return path.split(SITE, 1)[1]
    if path.startswith(str(REPO)):
        return path[len(str(REPO)) + 1 :]
    return path.rsplit("/lib/python3", 1)[-1].split("/", 1)[-1]


def component(path: str) -> str | None:
    if path.startswith(APP):
        return "app (SwarmDirector)"
    if SITE in path:
        package = path.split(SITE, 1)[1].split("/", 1)[0]
        return PACKAGES.get(package, package if package != "typing_extensions.py" else None)
    return None


def summarise(collapsed: Path, cpu_seconds: float, tokens: int, top: int = 15) -> dict[str, Any]:
    by_activity: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [parse_frame(f) for f in stack.split(";")]
        func, path = frames[-1]
        by_function[f"{func} ({short(path)})"] += n
        in_loop = func == "Runner.run"  # the loop's own work: uvloop shows no Python frame
        activity = next((a for a, marks in ACTIVITIES if any(m in stack for m in marks)), "other")
        by_activity[LOOP if in_loop else activity] += n
        owner = LOOP if in_loop else next((c for _, p in reversed(frames) if (c := component(p)) is not None), None)
        if owner is None:
            pool = any(p.endswith("concurrent/futures/thread.py") for _, p in frames)
            owner = "thread pool (C work off the loop)" if pool else "stdlib/C only (event loop)"
        by_component[owner] += n
    if not total:
        raise BenchError(f"py-spy wrote no samples to {collapsed}")
    per_token = cpu_seconds / tokens * 1e6 if tokens else 0.0
    return {
        "samples": total,
        "cpu_s": cpu_seconds,
        "tokens": tokens,
        "cpu_us_per_token": per_token,
        "activities": [
            {"activity": a, "share": n / total, "us_per_token": per_token * n / total}
            for a, n in by_activity.most_common()
        ],
        "components": [
            {"component": c, "share": n / total, "us_per_token": per_token * n / total}
            for c, n in by_component.most_common()
        ],
        "top_functions_self": [{"function": f, "share": n / total} for f, n in by_function.most_common(top)],
    }


def profile(bench: Bench, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.profile == "W1":
        label, batch = "W1 x 5 runs", Batch("fake-t500", replies=4, words=500, rounds=5)
    elif args.profile == "W3":
        batch = Batch("fake-t1", replies=1, words=1, rounds=args.w3_runs, timeout_s=30)
        label = f"W3 x {args.w3_runs} runs"
    else:
        n = max(args.n) if "W2" in args.only else 200
        label, batch = f"W2 N={n}", Batch("fake-t64-d20", replies=2, words=64, concurrency=n)
    pid = bench.server.pid
    log = out.with_suffix(".log")
    with log.open("wb") as log_file:
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--nonblocking",
                "--full-filenames",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(1.0)  # attached
            before = cpu_s(pid)
            raw = bench.load.request(asdict(batch), timeout=batch.timeout_s * batch.rounds + 60)
            time.sleep(0.5)
            used = cpu_s(pid) - before
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
    if not out.exists():
        raise BenchError(f"py-spy wrote nothing; see {log}")
    fig = figures(batch, [Timeline(**r) for r in raw])
    summary = summarise(out, used, fig["tokens"])
    summary.update(workload=label, collapsed_stacks=str(out), tokens_per_s_while_profiled=fig["tokens_per_s"])
    print_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"profile of the server, {summary['workload']}: {summary['cpu_us_per_token']:.0f} us of CPU per token "
        f"({summary['samples']} samples)",
        file=sys.stderr,
    )
    for a in summary["activities"]:
        print(f"  {a['share']:6.1%}  {a['us_per_token']:6.0f} us/token  {a['activity']}", file=sys.stderr)
    print("  by innermost package:", file=sys.stderr)
    for c in summary["components"][:12]:
        print(f"  {c['share']:6.1%}  {c['us_per_token']:6.0f} us/token  {c['component']}", file=sys.stderr)
    print("  top functions by own time:", file=sys.stderr)
    for f in summary["top_functions_self"]:
        print(f"  {f['share']:6.1%}  {f['function']}", file=sys.stderr)
