"""W6 (issue 22): what the protocol views cost, beside our own SSE route, in one server process.

Each protocol is a view of a run's event log (docs/protocols.md), so a run streamed as Chat
Completions or as AG-UI does the same work as one streamed on ``POST /v1/runs/stream``, plus the
translation into the dialect's frames. W6 measures that difference: one stored team (W1's, two
assistants, 4 replies x 500 words, ``fake-t500``, no delay) streamed three ways in turn by the load
client, each ``--w6-runs`` runs one after another, ``--w6-repeats`` times, which way goes first
rotating from repeat to repeat:

    sse   POST /v1/runs/stream {"team_id": ...}             a token: one ``message.delta`` event
    chat  POST /openai/v1/chat/completions, stream=true      a token: one ``reasoning_content`` chunk
    agui  POST /agui/teams/{team}                            a token: one ``TEXT_MESSAGE_CONTENT``

Figures per way, from the same ``Bench.measure`` as W1 (the server's CPU seconds over the batch from
/proc): server CPU per token and tokens/s, and each dialect's ratio to our SSE; the issue's target is
within 1.2x. A figure, not a test: nothing here stops the bench. A dialect the server does not serve
(its route answers 404) is skipped with its reason printed and recorded.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import report
from servers import BenchError
from workloads import Batch, team_spec

if TYPE_CHECKING:
    from run import Bench

TEAM = "bench_w6"
WAYS = {"sse": "our SSE", "chat": "Chat Completions", "agui": "AG-UI"}
TARGET = 1.2  # issue 22: each dialect's CPU per token within 1.2x of our SSE route's


def http(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if path.startswith("/openai/"):
        headers["Authorization"] = "Bearer bench"  # the SDKs always send one; an open server takes any
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def create_team(port: int) -> str:
    """W1's team, stored (the dialects run stored teams only); its id."""
    spec = {**team_spec("fake-t500", 4), "name": TEAM}
    status, body = http(port, "POST", "/v1/teams", spec)
    if status != 201:
        raise BenchError(f"W6: POST /v1/teams answered {status}: {body[:500]!r}")
    team_id: str = json.loads(body)["id"]
    return team_id


def unavailable(port: int) -> dict[str, str]:
    """The dialects this server cannot be measured on, with why."""
    probes = {"chat": "/openai/v1/models", "agui": f"/agui/teams/{TEAM}/health"}
    out: dict[str, str] = {}
    for way, path in probes.items():
        status, body = http(port, "GET", path)
        if status != 200:
            out[way] = f"GET {path} answered {status}: {body[:200].decode(errors='replace')}"
    return out


def batches(team_id: str, runs: int) -> dict[str, Batch]:
    base = Batch("fake-t500", replies=4, words=500, rounds=runs)
    # the dialects take the team by name (``model``, the AG-UI path), our route by id: the same team
    return {way: replace(base, team=team_id if way == "sse" else TEAM, dialect=way) for way in WAYS}


def run_w6(
    bench: Bench,
    runs: int,
    repeats: int,
    result: dict[str, Any],
    sections: list[tuple[str, int, dict[str, Any], dict[str, Any] | None]],
) -> None:
    """W6 on the bench's own server, after W1-W3; its sections: our SSE, then each dialect against it."""
    team_id = create_team(bench.port)
    skipped = unavailable(bench.port)
    for way, why in skipped.items():
        print(f"  W6 {WAYS[way]}: skipped, {why}", file=sys.stderr, flush=True)
    plan = batches(team_id, runs)
    ways = [w for w in WAYS if w not in skipped]
    # one run of each way first: each path's code is warm before anything is measured
    for way in ways:
        warm = replace(plan[way], rounds=1)
        bench.load.request(asdict(warm), timeout=warm.timeout_s + 60)
    figs: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}
    for i in range(repeats):
        for way in ways[i % len(ways) :] + ways[: i % len(ways)]:
            fig = bench.measure("server", plan[way])
            figs[way].append(fig)
            progress(way, i, repeats, fig)
    summaries = {way: report.summarise(f) for way, f in figs.items()}
    sse = summaries["sse"]
    # "server" as every workload has it (our SSE's summary; every batch measured, each naming its way)
    result["workloads"]["W6"] = {
        "batch": asdict(plan["sse"]),
        "team_id": team_id,
        "skipped": skipped,
        "server": {"summary": sse, "repeats": [{"dialect": way, **f} for way in ways for f in figs[way]]},
        "by_dialect": summaries,
        "ratio_to_sse": {way: ratios(summaries[way], sse) for way in ways if way != "sse"},
    }
    sections.append(("W6 our SSE", runs, sse, None))
    for way in ("chat", "agui"):
        label = f"W6 {WAYS[way]}"
        if way in summaries:
            sections.append((label, runs, summaries[way], sse))
        else:
            sections.append((f"{label} (skipped: not served)", runs, {}, None))


def ratios(dialect: dict[str, Any], sse: dict[str, Any]) -> dict[str, float | None]:
    def ratio(key: str) -> float | None:
        d, s = dialect.get(key), sse.get(key)
        return d / s if d is not None and s else None

    cpu = ratio("cpu_us_per_token")
    within = cpu is not None and cpu <= TARGET
    return {"cpu_us_per_token": cpu, "tokens_per_s": ratio("tokens_per_s"), "within_target": within}


def progress(way: str, i: int, repeats: int, fig: dict[str, Any]) -> None:
    cpu = fig["cpu_us_per_token"]
    bits = [
        f"{fig['tokens']}/{fig['expected_tokens']} tokens",
        f"{fig['tokens_per_s']:,.0f} tok/s",
        "—" if cpu is None else f"{cpu:.1f} us CPU per token",
    ]
    if fig["errors"]:
        bits.append(f"{fig['errors']} errors {fig['error_samples']}")
    print(f"  W6 {i + 1}/{repeats} {WAYS[way]:16}: " + ", ".join(bits), file=sys.stderr, flush=True)
