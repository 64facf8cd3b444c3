"""W4 and W5: many watchers on one server, figures only (issue 25).

    W4  one run watched by N SSE watchers (default 1,000): the gap between consecutive deltas at
        each watcher, how far apart the watchers get one delta, the server's CPU per 1,000
        delivered events, and whether every watcher got every event exactly once
    W5  N idle SSE connections (default 10,000) on one server process: its resident set before
        and after, memory per connection, and /healthz latency while they are held

Both watch a run of a team whose first member is a person (``user_proxy``), so the run waits
in ``awaiting_input`` with every watcher attached (each has read ``input.requested``) for as
long as the bench needs: nothing depends on timing. In W4 the bench then answers, and the
second member (the in-process fake model, ``fake/t<words>-d<ms>``) streams its reply at a
steady rate; W5 never answers, and cancels the run at the end. The watchers are held by
``bench/watchers.py``, a process of its own.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

from servers import (
    BenchError,
    Proc,
    Worker,
    cpu_s,
    fd_count,
    fd_limit,
    rss_kb,
    start_swarmdirector,
    start_worker,
    tree_pids,
    wait_http,
)
from workloads import ms, percentile

SETTLE_S = 0.5  # after a phase, before reading the server's CPU or memory
IN_FLIGHT = 200  # watchers connecting at once (the server's listen backlog is 2,048)
PROBE_INTERVAL_S = 0.1
# over repeats: counts of what went wrong summed, counts of what went right the least, the rest the median
SUMMED = {"lost", "duplicated", "out_of_order", "lagged", "errors"}
LEAST = {"with_terminal", "attached", "deltas_per_watcher_min"}


def asking_team(model: str) -> dict[str, Any]:
    """A person asks first (the run waits there), then the fake model answers once."""
    members = [{"name": "human", "kind": "user_proxy"}, {"name": "writer", "model": model}]
    return {"name": "watched", "kind": "round_robin", "members": members, "termination": {"max_messages": 3}}


def run_body(model: str) -> dict[str, Any]:
    # the run waits for its answer as long as the bench needs (W5 cancels it)
    return {"task": "go", "team": asking_team(model), "input_timeout_s": 3000, "timeout_s": 3600}


class Stage:
    """A fresh embedded server (one process, SQLite) and a watcher client of its own, for one repeat
    of W4 or W5.

    Fresh, because a process keeps the memory it once used: after 4,000 connections were opened
    and closed, the next 4,000 grew the server's resident set by under 1 KiB each, the first by 48.
    """

    def __init__(self, tmp: Path, fake_port: int, log_level: str, patches_off: str, fds: int) -> None:
        tmp.mkdir(parents=True)
        self.procs: list[Proc] = []
        try:
            self.server, self.port = start_swarmdirector(tmp, fake_port, log_level, patches_off=patches_off)
            self.procs.append(self.server)
            wait_http(self.server, f"http://127.0.0.1:{self.port}/healthz", timeout=90)
            self.client = start_worker("watcher client", "watchers.py", ["--port", str(self.port)], tmp)
            self.procs.append(self.client)
            limits = {"server": fd_limit(self.server.pid), "watcher client": self.client.wait_ready()["fd_limit"]}
            for name, limit in limits.items():
                if limit is not None and limit < fds:
                    raise BenchError(f"the {name} may open {limit} files, not the {fds} needed: ulimit -Hn")
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def attach_watchers(
    client: Worker, run_id: str, count: int, *, timeout_s: float, probe_s: float = 0.0
) -> dict[str, Any]:
    """``count`` more watchers of the run, each counted once it has read ``input.requested``; with
    ``probe_s``, /healthz probed that often meanwhile."""
    command = {"run_id": run_id, "count": count, "until": "input.requested", "in_flight": IN_FLIGHT}
    return client.ask({"cmd": "attach", **command, "timeout_s": timeout_s, "probe_s": probe_s}, timeout=timeout_s + 60)


def server_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in tree_pids(pid))


def get_run(port: int, run_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/runs/{run_id}", timeout=30) as resp:
        run: dict[str, Any] = json.load(resp)
        return run


def server_rss_kb(pid: int) -> int:
    return sum(rss_kb(p) for p in tree_pids(pid))


def server_fds(pid: int) -> int:
    return sum(fd_count(p) for p in tree_pids(pid))


def connections_to(port: int) -> int:
    """Established TCP connections whose local end is 127.0.0.1:``port``: the server's side of each."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if (f := row.split())[1] == local and f[3] == "01")


def wait_connections(port: int, most: int, timeout: float = 60.0) -> float | None:
    """Until the server holds at most ``most`` connections (it has closed the released ones); how
    long that took, or None if it still held more after ``timeout``."""
    started = time.monotonic()
    while connections_to(port) > most:
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.1)
    return time.monotonic() - started


# -- W4 ------------------------------------------------------------------------------------------


def fanout(stage: Stage, watchers: int, words: int, delay_ms: int) -> dict[str, Any]:
    """One run, ``watchers`` SSE watchers, ``words`` deltas ``delay_ms`` apart; the figures."""
    server_pid, port, client = stage.server.pid, stage.port, stage.client
    model = f"fake/t{words}-d{delay_ms}"
    run_id = client.ask({"cmd": "create", "body": run_body(model)}, timeout=60)["run_id"]
    rss_before, attach_cpu0 = server_rss_kb(server_pid), server_cpu_s(server_pid)
    attach = attach_watchers(client, run_id, watchers, timeout_s=120)
    requested = attach["until_event"]
    if requested is None:  # fewer than all is a figure (their errors are counted); none is the end
        raise BenchError(f"W4: no watcher attached to the run: {attach['error_samples']}")
    time.sleep(SETTLE_S)
    rss_attached, attach_cpu = server_rss_kb(server_pid), server_cpu_s(server_pid) - attach_cpu0
    cpu0, client0, started = server_cpu_s(server_pid), cpu_s(client.pid), time.perf_counter()
    client.ask(
        {"cmd": "answer", "run_id": run_id, "request_id": requested["data"]["request_id"], "content": "Go on."},
        timeout=60,
    )
    stream_s = words * delay_ms / 1000
    raw = client.ask({"cmd": "finish", "timeout_s": 60 + 3 * stream_s}, timeout=120 + 3 * stream_s)["watchers"]
    wall = time.perf_counter() - started
    time.sleep(SETTLE_S)
    cpu = server_cpu_s(server_pid) - cpu0
    client_cpu = cpu_s(client.pid) - client0
    client.ask({"cmd": "release"}, timeout=60)
    run = get_run(port, run_id)
    fig = fanout_figures(raw, last_seq=run["last_seq"], after_seq=requested["seq"])
    fig.update(
        run_status=run["status"],
        model=model,
        nominal_stream_s=stream_s,
        attach_s=attach["attach_s"],
        attach_cpu_ms_per_watcher=attach_cpu / watchers * 1000,
        kib_per_watcher=(rss_attached - rss_before) / watchers,
        server_cpu_s=cpu,
        cpu_ms_per_1000_events=cpu / fig["delivered_events"] * 1e6 if fig["delivered_events"] else None,
        server_cores=cpu / (wall + SETTLE_S),
        client_cpu_s=client_cpu,
        client_cpu_share=client_cpu / (wall + SETTLE_S),
        phase_wall_s=wall,
    )
    return fig


def fanout_figures(raw: list[dict[str, Any]], *, last_seq: int, after_seq: int) -> dict[str, Any]:
    """From each watcher's seqs and delta arrivals: exactly-once, the gaps, and one delta's spread."""
    expected = set(range(1, last_seq + 1))
    lost = duplicated = out_of_order = 0
    gaps: list[float] = []
    for w in raw:
        seqs: list[int] = w["seqs"]
        lost += len(expected - set(seqs))
        duplicated += len(seqs) - len(set(seqs))
        out_of_order += sum(b <= a for a, b in pairwise(seqs))
        gaps += [b - a for a, b in pairwise(w["deltas"])]
    # the i-th delta reaches the first watcher and the last one this far apart (over watchers that got all)
    most = max((len(w["deltas"]) for w in raw), default=0)
    spread = [
        max(arrivals) - min(arrivals)
        for arrivals in zip(*(w["deltas"] for w in raw if len(w["deltas"]) == most), strict=True)
    ]
    last = [w["deltas"][-1] for w in raw if w["deltas"]]
    errors = [w["error"] for w in raw if w["error"]]
    return {
        "watchers": len(raw),
        "with_terminal": sum(w["terminal"] is not None for w in raw),
        "terminal_events": sorted({w["terminal"] for w in raw if w["terminal"]}),
        "expected_events": last_seq,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "lagged": sum(w["lagged"] for w in raw),
        "deltas_per_watcher_min": min((len(w["deltas"]) for w in raw), default=0),
        "delivered_events": sum(sum(s > after_seq for s in w["seqs"]) for w in raw),
        "gap_p50_ms": ms(percentile(gaps, 50)),
        "gap_p99_ms": ms(percentile(gaps, 99)),
        "gap_max_ms": ms(max(gaps, default=None)),
        "spread_p50_ms": ms(percentile(spread, 50)),
        "spread_p99_ms": ms(percentile(spread, 99)),
        "last_delta_s": max(last, default=None),  # since the answer: the stream's length as watchers saw it
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
    }


# -- W5 ------------------------------------------------------------------------------------------


def idle(stage: Stage, connections: int, probes: int) -> dict[str, Any]:
    """``connections`` idle SSE watchers of a run awaiting input; memory and /healthz while held."""
    server_pid, port, client = stage.server.pid, stage.port, stage.client
    probe = {"cmd": "probe", "count": probes, "interval_s": PROBE_INTERVAL_S}
    # the server idle, before any connection: a fifth as many probes
    before_probes = client.ask({**probe, "count": max(3, probes // 5)}, timeout=60 + probes * 31)
    run_id = client.ask({"cmd": "create", "body": run_body("fake/t1")}, timeout=60)["run_id"]
    # the run is waiting (one watcher sees it ask) before the resident set is read
    attach_watchers(client, run_id, 1, timeout_s=60)
    time.sleep(SETTLE_S)
    rss_before, fds_before, cpu_before = server_rss_kb(server_pid), server_fds(server_pid), server_cpu_s(server_pid)
    held_before = connections_to(port)
    attach = attach_watchers(client, run_id, connections, timeout_s=300, probe_s=PROBE_INTERVAL_S)
    time.sleep(SETTLE_S)
    rss_after, fds_after, cpu0 = server_rss_kb(server_pid), server_fds(server_pid), server_cpu_s(server_pid)
    held = client.ask(probe, timeout=60 + probes * 31)
    cpu = server_cpu_s(server_pid) - cpu0
    client.ask({"cmd": "release"}, timeout=120)
    release_s = wait_connections(port, held_before - 1)  # the first watcher goes too
    client.ask({"cmd": "cancel", "run_id": run_id}, timeout=60)
    time.sleep(SETTLE_S)
    attached = attach["attached"]
    latencies = held["latencies_s"]
    opening = attach["probe_latencies_s"]
    errors = [*attach["error_samples"], *held["errors"], *before_probes["errors"], *attach["probe_errors"]]
    dropped = 1 + attached - held["open"]  # attached, then ended by the server while held
    if dropped:
        errors.append(f"{dropped} connections ended while held")
    if release_s is None:
        errors.append(f"the server still held {connections_to(port)} connections a minute after the release")
    return {
        "connections": connections,
        "attached": attached,
        "attach_s": attach["attach_s"],
        "attach_cpu_ms_per_connection": (cpu0 - cpu_before) / connections * 1000,
        "attach_client_cpu_s": attach["client_cpu_s"],
        "client_rss_mb": attach["client_rss_kb"] / 1024,
        "server_rss_before_mb": rss_before / 1024,
        "server_rss_held_mb": rss_after / 1024,
        "kib_per_connection": (rss_after - rss_before) / attached if attached else None,
        "server_fds_held": fds_after - fds_before,
        "release_s": release_s,  # until the server has closed every released connection
        "server_rss_released_mb": server_rss_kb(server_pid) / 1024,
        "healthz_idle_p50_ms": ms(percentile(before_probes["latencies_s"], 50)),
        "healthz_idle_p99_ms": ms(percentile(before_probes["latencies_s"], 99)),
        "healthz_opening_p50_ms": ms(percentile(opening, 50)),
        "healthz_opening_p99_ms": ms(percentile(opening, 99)),
        "healthz_opening_max_ms": ms(max(opening, default=None)),
        "probes_opening": len(opening),
        "healthz_p50_ms": ms(percentile(latencies, 50)),
        "healthz_p99_ms": ms(percentile(latencies, 99)),
        "healthz_max_ms": ms(max(latencies, default=None)),
        "probes": len(latencies),
        "held_s": held["wall_s"],
        "held_server_cpu_share": cpu / held["wall_s"] if held["wall_s"] else None,
        "held_client_cpu_share": held["client_cpu_s"] / held["wall_s"] if held["wall_s"] else None,
        "pings_while_held": held["pings"],
        "errors": attach["errors"]
        + len(held["errors"])
        + len(before_probes["errors"])
        + len(attach["probe_errors"])
        + dropped
        + (release_s is None),
        "error_samples": sorted(set(errors))[:5],
    }


def summarise(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts summed over repeats, other numbers their median (lists: the first repeat's)."""
    out: dict[str, Any] = {}
    for key, value in repeats[0].items():
        values = [r[key] for r in repeats if r.get(key) is not None]
        if key in SUMMED:
            out[key] = sum(values)
        elif key in LEAST:
            out[key] = min(values)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = statistics.median(values) if values else None
        else:
            out[key] = value
    out["error_samples"] = sorted({e for r in repeats for e in r["error_samples"]})[:5]
    out["repeats"] = len(repeats)
    return out
