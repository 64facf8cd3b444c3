"""Benchmark: the model client's own cost, AutoGen's stock stream against the lean one, and team construction.

What `make bench` cannot isolate: how much CPU the model client itself spends, per streamed
token and per call, and what building a run's team costs. In one process, against the fake model
server (``app/dev/fake_llm.py``) on a loopback port, with the registry the server uses:

- per token: one 2,000-token stream (``fake-t2000``, tokens arrive in bursts), CPU seconds / tokens,
  each client bare and behind ``GuardedModelClient`` with a sink (the fast token path, as a run uses
  it); and one 500-token stream with 1 ms before each token (``fake-t500-d1``), so that every token
  is a read of its own, and the event loop's wake-up per read is counted too, as under W2;
- per call: sequential one-token calls (``fake-t1``), the client built for each call as a run does;
- per team: ``TeamFactory.build_team`` of the benchmark's two-assistant round robin (and with two
  tools each), ``fast_tokens`` on (lean clients) and off (AutoGen's stock clients).

It runs on uvloop, as the server does. Figures are medians over repeats. Prints a table, writes
bench/results/model-client-<time>.json.

    .venv/bin/python bench/model_client.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop
from autogen_core.models import ChatCompletionClient, LLMMessage, UserMessage
from servers import BENCH, start_fake_llm, wait_http

from app import patches
from app.core.settings import Settings
from app.engine.calls import CallPolicy, GuardedModelClient
from app.engine.factory import TeamFactory
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolContext, ToolRegistry
from app.teams.schemas import ResolvedTeamSpec

MESSAGES: list[LLMMessage] = [UserMessage(content="go", source="user")]
LONG, ONE, PACED = "openai_compatible/fake-t2000", "openai_compatible/fake-t1", "openai_compatible/fake-t500-d1"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def cpu_of(work: Callable[[], Awaitable[int]]) -> float:
    """CPU seconds of ``work`` per unit it reports."""
    started = cpu()
    units = await work()
    return (cpu() - started) / units


def team_spec(tools: list[str]) -> ResolvedTeamSpec:
    members = [{"name": n, "model": "openai_compatible/fake-t64-d20", "tools": tools} for n in ("a1", "a2")]
    return ResolvedTeamSpec.model_validate(
        {"name": "bench", "kind": "round_robin", "members": members, "termination": {"max_messages": 3}}
    )


async def measure(models: ModelRegistry, repeats: int, calls: int) -> dict[str, float]:
    figures: dict[str, list[float]] = {}
    long_ref, one_ref, paced_ref = models.parse(LONG), models.parse(ONE), models.parse(PACED)

    def add(key: str, value: float) -> None:
        figures.setdefault(key, []).append(value)

    async def stream(client: ChatCompletionClient) -> int:
        return sum([1 async for item in client.create_stream(MESSAGES) if isinstance(item, str)])

    async def sunk(lean: bool) -> int:
        count = [0]

        def sink(_message_id: str, _text: str) -> None:
            count[0] += 1

        inner = models.build(long_ref, streaming=True, lean=lean)
        guarded = GuardedModelClient(inner, CallPolicy(60, 0, 0.1), agent="a", model=LONG, observer=None, sink=sink)
        await guarded.create(MESSAGES)
        return count[0]

    async def one_token_calls(lean: bool) -> int:
        for _ in range(calls):
            await stream(models.build(one_ref, streaming=True, lean=lean))
        return calls

    tool_context = ToolContext("run", "conversation", "principal", None)  # type: ignore[arg-type]

    async def teams(fast_tokens: bool, tools: list[str]) -> int:
        factory = TeamFactory(
            models,
            ToolRegistry.with_builtins(),
            default_max_messages=10,
            policy=CallPolicy(60, 0, 0.1),
            fast_tokens=fast_tokens,
        )
        spec = team_spec(tools)
        for _ in range(calls):
            factory.build_team(spec, sinks=lambda _agent: lambda _m, _t: None, tools=tool_context)
        return calls

    await one_token_calls(True)  # warm up: imports, the connection, the SDK clients
    await one_token_calls(False)
    for _ in range(repeats):
        for lean, side in ((False, "stock"), (True, "lean")):
            add(
                f"token_us.{side}",
                await cpu_of(lambda lean=lean: stream(models.build(long_ref, streaming=True, lean=lean))) * 1e6,
            )
            add(f"token_sink_us.{side}", await cpu_of(lambda lean=lean: sunk(lean)) * 1e6)
            add(
                f"token_paced_us.{side}",
                await cpu_of(lambda lean=lean: stream(models.build(paced_ref, streaming=True, lean=lean))) * 1e6,
            )
            add(f"call_ms.{side}", await cpu_of(lambda lean=lean: one_token_calls(lean)) * 1e3)
            add(f"team_ms.{side}", await cpu_of(lambda lean=lean: teams(lean, [])) * 1e3)
            add(
                f"team_tools_ms.{side}",
                await cpu_of(lambda lean=lean: teams(lean, ["calculator", "current_time"])) * 1e3,
            )
    return {k: statistics.median(v) for k, v in figures.items()}


ROWS = (
    ("token_us", "CPU per streamed token, client alone (us)"),
    ("token_sink_us", "CPU per streamed token, guarded, fast token path (us)"),
    ("token_paced_us", "CPU per streamed token, one read per token, event loop included (us)"),
    ("call_ms", "CPU per one-token call, client built for it (ms)"),
    ("team_ms", "CPU per build_team, 2 assistants (ms)"),
    ("team_tools_ms", "CPU per build_team, 2 assistants x 2 tools (ms)"),
)


def render(result: dict[str, float]) -> str:
    lines = [
        "| figure | AutoGen's stock client | lean stream | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ROWS:
        stock, lean = result[f"{key}.stock"], result[f"{key}.lean"]
        lines.append(f"| {label} | {stock:,.2f} | {lean:,.2f} | {lean / stock:.2f}x |")
    return "\n".join(lines)


async def main(repeats: int, calls: int) -> dict[str, float]:
    patches.install()
    with tempfile.TemporaryDirectory(prefix="swarm-bench-") as tmp:
        fake, port = start_fake_llm(Path(tmp))
        try:
            wait_http(fake, f"http://127.0.0.1:{port}/health")
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                database_url=f"sqlite+aiosqlite:///{tmp}/unused.db",
                openai_compatible_base_url=f"http://127.0.0.1:{port}/v1",
            )
            models = ModelRegistry(settings)
            try:
                return await measure(models, repeats, calls)
            finally:
                await models.aclose()
        finally:
            fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each figure (default 5)")
    parser.add_argument("--calls", type=int, default=100, help="one-token calls and team builds per repeat")
    args = parser.parse_args()
    result = uvloop.run(main(args.repeats, args.calls))
    print(render(result))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = BENCH / "results" / f"model-client-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "figures": result}, indent=2) + "\n")
    print(f"raw figures: {out}")
