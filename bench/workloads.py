"""What the issue-7 benchmark measures, defined once for both sides.

The load client (``load.py``, SwarmDirector over HTTP) and the floor
(``floor.py``, the same AutoGen team in a plain script) run the same
batches and report the same raw timeline per run; every figure is computed
here from those timelines, so both sides are measured by one definition.
Both are long-lived worker processes that take one batch per line of stdin
and answer one JSON line (``worker_loop``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

# a run's first team is built and its model called once before any figure is taken
WARMUP = ("fake-t1", 1, 1)


@dataclass(frozen=True, slots=True)
class Batch:
    """``rounds`` rounds, one after another, of ``concurrency`` runs started at once."""

    model: str  # fake LLM model name: fake-t500, fake-t64-d20, fake-t1
    replies: int  # model replies per run (MaxMessageTermination(replies + 1): the task counts)
    words: int  # words (= streamed chunks = tokens) per reply
    concurrency: int = 1
    rounds: int = 1
    timeout_s: float = 120.0  # per run
    # W6 (load client only): a stored team (id or name) run through ``dialect``, our SSE route
    # (``sse``), Chat Completions (``chat``) or AG-UI (``agui``); empty: the inline team on our SSE route
    team: str = ""
    dialect: str = "sse"

    @property
    def expected_tokens(self) -> int:
        return self.replies * self.words * self.concurrency * self.rounds


@dataclass(slots=True)
class Timeline:
    """One run as its consumer saw it, in seconds since the batch started (perf_counter)."""

    t0: float  # request sent (load) / team about to be built (floor)
    first_event: float | None = None  # first SSE event (load) / first item of run_stream (floor)
    tokens: list[float] = field(default_factory=list)  # arrival of each message.delta / streaming chunk
    finished: float | None = None  # terminal event (load) / TaskResult (floor)
    status: str = "unknown"  # succeeded, or what went wrong
    error: str | None = None

    def relative_to(self, start: float) -> Timeline:
        """The same timeline with times counted from ``start`` (small numbers in JSON)."""
        return Timeline(
            t0=self.t0 - start,
            first_event=None if self.first_event is None else self.first_event - start,
            tokens=[x - start for x in self.tokens],
            finished=None if self.finished is None else self.finished - start,
            status=self.status,
            error=self.error,
        )


def team_spec(model: str, replies: int) -> dict[str, Any]:
    """SwarmDirector's inline team: two assistants taking turns, ``replies`` model replies."""
    members = [{"name": n, "model": f"openai_compatible/{model}"} for n in ("a1", "a2")]
    return {"name": "bench", "kind": "round_robin", "members": members, "termination": {"max_messages": replies + 1}}


# -- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def max_live(runs: list[Timeline]) -> int:
    """Most runs live at once, a run being live from its request to its terminal event (or last sign)."""
    edges: list[tuple[float, int]] = []
    for r in runs:
        end = r.finished if r.finished is not None else max([r.t0, *r.tokens])
        edges += [(r.t0, 1), (end, -1)]
    live = peak = 0
    for _, step in sorted(edges):  # at a tie the end (-1) sorts first
        live += step
        peak = max(peak, live)
    return peak


def figures(batch: Batch, runs: list[Timeline]) -> dict[str, Any]:
    """Every figure of one batch, from its timelines (times in ms, rates per second)."""
    tokens = sum(len(r.tokens) for r in runs)
    errors = sum(r.status != "succeeded" for r in runs)
    stamps = [t for r in runs for t in r.tokens]
    span = (max(stamps) - min(r.t0 for r in runs)) if stamps else 0.0
    ttft = [r.tokens[0] - r.t0 for r in runs if r.tokens]
    gaps = [b - a for r in runs for a, b in zip(r.tokens, r.tokens[1:], strict=False)]
    first = [r.first_event - r.t0 for r in runs if r.first_event is not None]
    done = [r.finished - r.t0 for r in runs if r.finished is not None]
    return {
        "runs": len(runs),
        "tokens": tokens,
        "expected_tokens": batch.expected_tokens,
        "all_delivered": tokens == batch.expected_tokens and errors == 0,
        "errors": errors,
        "error_samples": sorted({f"{r.status}: {r.error}" for r in runs if r.status != "succeeded"})[:5],
        "tokens_per_s": tokens / span if span > 0 else 0.0,
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "gap_p50_ms": ms(percentile(gaps, 50)),
        "gap_p99_ms": ms(percentile(gaps, 99)),
        "first_event_p50_ms": ms(percentile(first, 50)),
        "first_event_p95_ms": ms(percentile(first, 95)),
        "finished_p50_ms": ms(percentile(done, 50)),
        "finished_p95_ms": ms(percentile(done, 95)),
        "max_live_runs": max_live(runs),
        "wall_s": max([r.finished or 0.0 for r in runs] + stamps, default=0.0) - min((r.t0 for r in runs), default=0.0),
    }


# -- the worker protocol -------------------------------------------------------------------------

RunBatch = Callable[[Batch], Coroutine[Any, Any, list[Timeline]]]


def worker_loop(run_batch: RunBatch, *, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> None:
    """Answer batches from stdin, one JSON line each, until stdin closes.

    The protocol keeps the process's real stdout; anything else printing to
    stdout (a library's warning) goes to stderr instead.
    """
    proto: TextIO = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
        for line in sys.stdin:
            if not line.strip():
                continue
            batch = Batch(**json.loads(line))
            runs = runner.run(run_batch(batch))
            proto.write(json.dumps({"runs": [asdict(r) for r in runs]}) + "\n")


async def run_rounds(
    batch: Batch, one: Callable[[float], Awaitable[Timeline]], clock: Callable[[], float]
) -> list[Timeline]:
    """The batch's rounds, one after another, each of ``concurrency`` runs of ``one(batch_start)``."""
    start = clock()
    out: list[Timeline] = []
    for _ in range(batch.rounds):
        out.extend(await asyncio.gather(*(one(start) for _ in range(batch.concurrency))))
    return out
