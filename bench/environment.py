"""What the benchmark ran on, recorded with every result, and the notes printed under the table.

A figure means little without the machine, the versions and how busy the
machine was (its load average before and after): all of it goes into the
JSON, and the few lines a reader needs to judge the table are printed.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from servers import REPO

PACKAGES = (
    "autogen-agentchat",
    "autogen-core",
    "autogen-ext",
    "openai",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "sse-starlette",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
    "swarmdirector",
)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "loadavg_before": loadavg(),
    }


def notes(result: dict[str, Any]) -> list[str]:
    env = result["environment"]
    lines = [
        f"machine: {env['cpu_count']} CPUs ({env['cpu_model']}), Python {env['python']}, "
        f"load average {env['loadavg_before'][0]:.1f} before, {env['loadavg_after'][0]:.1f} after; "
        "the load client, the fake model server and the server under test share these CPUs.",
        "ratio = SwarmDirector / floor; medians over repeats; tokens and errors summed over repeats.",
    ]
    if "W6" in result["workloads"]:
        lines.append("W6: the floor column is our own SSE route (POST /v1/runs/stream); ratio = dialect / our SSE.")
    server = result.get("server", {})
    if server.get("backend") == "distributed":
        n = server["processes"]
        lines.append(
            f"server: distributed (PostgreSQL {server['database']}, Redis prefix {server['redis_prefix']}), "
            f"{n} API process{'es on one port' if n > 1 else ''}"
            + (
                "; its CPU seconds and RSS are sums over the process tree (peak RSS: each process's own peak)."
                if n > 1
                else "."
            )
        )
    store = [
        (label, r["postgres_cpu_s"], r["redis_cpu_s"], r["cpu_s"])
        for label, w in result["workloads"].items()
        for r in w["server"]["repeats"][:1]
        if "postgres_cpu_s" in r
    ]
    if store:
        lines.append(
            "outside the server's figures, on the same CPUs: PostgreSQL (this database's backends and its "
            "shared processes) and redis-server used "
            + "; ".join(
                f"{pg:.2f} s and {rd:.2f} s of CPU in {label} (server: {cpu:.2f} s)" for label, pg, rd, cpu in store
            )
            + "."
        )
    idle = result.get("idle_rss_mb", {})
    if idle:
        lines.append(f"idle RSS after a warm-up run: server {idle['server']:.1f} MB, floor {idle['floor']:.1f} MB.")
    client = [
        (label, r["client_cpu_share"], r["fake_llm_cpu_share"])
        for label, w in result["workloads"].items()
        for r in w["server"]["repeats"]
        if "fake_llm_cpu_share" in r  # W1-W3's load client (W4 and W5's has a line of its own)
    ]
    if client:
        label, share, _ = max(client, key=lambda c: c[1])
        fake = max(c[2] for c in client)
        lines.append(
            f"load client CPU: at most {share:.0%} of one core ({label}); fake model server: at most {fake:.0%}."
        )
    watch = {label.split()[0]: w["server"]["summary"] for label, w in result["workloads"].items()}
    if "W4" in watch or "W5" in watch:
        bits = []
        if "W4" in watch:
            bits.append(f"{watch['W4']['client_cpu_share']:.0%} of one core over W4's stream")
        if "W5" in watch:
            bits.append(f"{watch['W5']['client_rss_mb']:.0f} MB holding W5's connections")
        lines.append("watcher client (bench/watchers.py): " + ", ".join(bits) + ".")
    other = [
        (max(0.0, r["other_cpu_s"]) / r["batch_wall_s"] / (env["cpu_count"] or 1), label, side)
        for label, w in result["workloads"].items()
        for side in ("server", "floor")
        for r in w.get(side, {}).get("repeats", [])
        if "other_cpu_s" in r and r["batch_wall_s"] > 0
    ]
    if other:
        share, label, side = max(other)
        lines.append(
            f"other work on the machine (beyond the processes measured): at most {share:.0%} of its CPUs "
            f"during a batch ({label}, {side} side)."
        )
    return lines
