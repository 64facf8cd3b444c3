"""The issue-7 table: each figure beside the floor's, their ratio, the target and whether it is met.

Kept apart from the orchestrator so the targets are in one short list that
reads like the issue. Targets are printed figures, never a test's pass or
fail. Ratios are SwarmDirector / floor for every figure (above 1: more
tokens per second, or more milliseconds, than the bare library). W4 and W5
(many watchers of one server) have no floor and no target of the issue's but
"nothing lost". W7 (runs parked for a person) has no floor either.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Check = Callable[[float, float | None], bool]

NOT_SUMMED = {"tokens", "expected_tokens", "errors", "all_delivered", "error_samples", "runs"}


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    key: str
    unit: str  # tok/s, ms, MB, KB, s, us, %, n
    target: str = ""
    check: Check | None = None
    needs_floor: bool = False  # a section without a floor has no verdict on this row


def at_least_floor(factor: float) -> Check:
    return lambda s, f: f is not None and s >= factor * f


def at_most_floor(factor: float) -> Check:
    return lambda s, f: f is not None and s <= factor * f


def at_most(limit: float) -> Check:
    return lambda s, _f: s <= limit


ALL = Row("tokens delivered", "delivered_pct", "%", "all", lambda s, _f: s == 100.0)
ERRORS = Row("errors", "errors", "n", "0", lambda s, _f: s == 0)


def all_of(n: int) -> Check:
    return lambda s, _f: s == n


def rows_for(workload: str, n: int) -> list[Row]:
    if workload == "W4":
        return [
            Row("delta gap at each watcher p50", "gap_p50_ms", "ms"),
            Row("delta gap at each watcher p99", "gap_p99_ms", "ms"),
            Row("delta gap at each watcher max", "gap_max_ms", "ms"),
            Row("one delta, first → last watcher p99", "spread_p99_ms", "ms"),
            Row("server CPU per 1,000 delivered events", "cpu_ms_per_1000_events", "ms"),
            Row("server CPU seconds", "server_cpu_s", "s"),
            Row("watchers with the terminal event", "with_terminal", "n", "all", all_of(n)),
            Row("events lost", "lost", "n", "0", lambda s, _f: s == 0),
            Row("events duplicated", "duplicated", "n", "0", lambda s, _f: s == 0),
        ]
    if workload == "W5":
        return [
            Row("connections held", "attached", "n", "all", all_of(n)),
            Row("time to open them all", "attach_s", "s"),
            Row("server CPU per connection opened", "attach_cpu_ms_per_connection", "ms"),
            Row("server RSS before", "server_rss_before_mb", "MB"),
            Row("server RSS while held", "server_rss_held_mb", "MB"),
            Row("server memory per connection", "kib_per_connection", "KiB"),
            Row("/healthz p50 before", "healthz_idle_p50_ms", "ms"),
            Row("/healthz p99 before", "healthz_idle_p99_ms", "ms"),
            Row("/healthz p99 while opening them", "healthz_opening_p99_ms", "ms"),
            Row("/healthz max while opening them", "healthz_opening_max_ms", "ms"),
            Row("/healthz p50 while held", "healthz_p50_ms", "ms"),
            Row("/healthz p99 while held", "healthz_p99_ms", "ms"),
            Row("/healthz max while held", "healthz_max_ms", "ms"),
            Row("server CPU while held, of one core", "held_server_cpu_share", "% core"),
            ERRORS,
        ]
    if workload == "W7":  # issue 24: runs parked for a person, in one embedded server process
        return [
            Row("runs parked", "parked", "n", "all", all_of(n)),
            Row("time to start and park them all", "park_s", "s"),
            Row("server CPU per run, start to parked", "park_cpu_ms_per_run", "ms"),
            Row("server RSS before", "server_rss_before_mb", "MB"),
            Row("server RSS with half of them parked", "server_rss_half_mb", "MB"),
            Row("server RSS with them parked", "server_rss_parked_mb", "MB"),
            Row("server memory per parked run", "kb_per_parked_run", "KB", "< 20 KB", lambda s, _f: s < 20),
            Row("server memory per parked run, second half", "kb_per_parked_run_second_half", "KB"),
            Row("runs with a task while they are parked", "runs_live_while_parked", "n", "0", lambda s, _f: s == 0),
            Row("runs started after them (live-run limit 20)", "after_started", "n"),
            Row("of those, refused or not completed", "after_not_completed", "n", "0", lambda s, _f: s == 0),
            Row("time to cancel them all", "cancel_s", "s"),
            Row("server CPU per turn, a run without retries", "turn_cpu_ms", "ms"),
            Row("server CPU per turn, a run with retries (step mode)", "step_turn_cpu_ms", "ms"),
            Row("step mode's CPU per turn", "step_cpu_ms_per_turn", "ms"),
            ERRORS,
        ]
    if workload == "W6":  # issue 22: each dialect beside our SSE route, which stands in the floor's column
        return [
            Row(
                "server CPU per token, vs our SSE",
                "cpu_us_per_token",
                "us",
                "≤ 1.2x SSE",
                at_most_floor(1.2),
                needs_floor=True,
            ),
            Row("tokens/s, request → last token, vs our SSE", "tokens_per_s", "tok/s"),
            ALL,
            ERRORS,
        ]
    if workload == "W1":
        return [
            Row("tokens/s, request → last token", "tokens_per_s", "tok/s", "≥ 1.5x floor", at_least_floor(1.5)),
            ALL,
        ]
    if workload == "W3":
        return [
            Row("request → first event p50", "first_event_p50_ms", "ms", "≤ 10 ms", at_most(10)),
            Row("request → first event p95", "first_event_p95_ms", "ms"),
            Row("request → finished p50", "finished_p50_ms", "ms", "≤ 15 ms", at_most(15)),
            Row("request → finished p95", "finished_p95_ms", "ms"),
            ERRORS,
        ]
    rate = Row("total tokens/s", "tokens_per_s", "tok/s")
    ttft = Row("time to first token p99", "ttft_p99_ms", "ms")
    gap = Row("gap between tokens p99", "gap_p99_ms", "ms")
    if n == 50:
        ttft = Row(ttft.label, ttft.key, "ms", "≤ 150 ms", at_most(150))
        gap = Row(gap.label, gap.key, "ms", "≤ 60 ms", at_most(60))
    if n == 200:
        rate = Row(rate.label, rate.key, "tok/s", "≥ 2x floor", at_least_floor(2.0))
        ttft = Row(ttft.label, ttft.key, "ms", "≤ 1 s", at_most(1000))
    return [
        rate,
        ALL,
        Row("time to first token p50", "ttft_p50_ms", "ms"),
        ttft,
        gap,
        Row("peak RSS", "peak_rss_mb", "MB"),
        Row("runs live at once (max)", "max_live_runs", "n"),
        Row("memory per live run beyond idle", "kb_per_live_run", "KB", "≤ 250 KB", at_most(250)),
        Row("CPU seconds", "cpu_s", "s"),
        Row("CPU per token", "cpu_us_per_token", "us"),
        ERRORS,
    ]


def summarise(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repeats; counts (tokens, errors) summed."""
    out: dict[str, Any] = {}
    for key, value in repeats[0].items():
        if key in NOT_SUMMED or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        values = [r[key] for r in repeats if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    for key in ("tokens", "expected_tokens", "errors", "runs"):
        out[key] = sum(r[key] for r in repeats)
    out["delivered_pct"] = 100.0 * out["tokens"] / out["expected_tokens"] if out["expected_tokens"] else 0.0
    out["all_delivered"] = all(r["all_delivered"] for r in repeats)
    out["error_samples"] = sorted({e for r in repeats for e in r["error_samples"]})[:5]
    out["repeats"] = len(repeats)
    return out


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("tok/s", "KB", "us", "n"):
        return f"{value:,.0f}"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "% core":
        return f"{100 * value:.1f} %"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:.1f}"


# figures of the process doing the work: over a server of several processes, sums over all of them
PER_PROCESS = {"peak_rss_mb", "kb_per_live_run", "cpu_s", "cpu_us_per_token"}


def table(
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]], *, server_processes: int = 1
) -> list[dict[str, str]]:
    """One row per figure: (workload label, N, server summary, floor summary or None).

    With ``server_processes`` above 1 the server's CPU and memory figures are sums over its
    processes (peak RSS: the sum of each one's own peak), and their labels say so.
    """
    rows: list[dict[str, str]] = []
    for label, n, server, floor in sections:
        workload = label.split()[0]
        for row in rows_for(workload, n):
            s = server.get(row.key)
            f = floor.get(row.key) if floor else None
            ratio = f"{s / f:.2f}x" if isinstance(s, int | float) and f else "—"
            met = "—"
            if row.check is not None and s is not None and (floor is not None or not row.needs_floor):
                met = "yes" if row.check(s, f) else "NO"
            unit = "" if row.unit in ("n", "%", "% core") else f" ({row.unit})"
            summed = f", sum of {server_processes} processes" if server_processes > 1 else ""
            if row.key not in PER_PROCESS:
                summed = ""
            rows.append(
                {
                    "workload": label,
                    "figure": row.label + summed + unit,
                    "swarmdirector": fmt(s, row.unit),
                    "floor": fmt(f, row.unit),
                    "ratio": ratio,
                    "target": row.target or "—",
                    "met": met,
                }
            )
    return rows


HEADERS = {
    "workload": "workload",
    "figure": "figure",
    "swarmdirector": "SwarmDirector",
    "floor": "floor",
    "ratio": "ratio",
    "target": "target",
    "met": "met?",
}


def render(rows: list[dict[str, str]]) -> str:
    """A Markdown table, aligned for the terminal."""
    widths = {k: max(len(h), *(len(r[k]) for r in rows)) for k, h in HEADERS.items()}
    right = {"swarmdirector", "floor", "ratio"}

    def line(cells: dict[str, str]) -> str:
        parts = [cells[k].rjust(w) if k in right else cells[k].ljust(w) for k, w in widths.items()]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if k in right else "-" * (w + 2) for k, w in widths.items()) + "|"
    return "\n".join([line(HEADERS), rule, *(line(r) for r in rows)])
