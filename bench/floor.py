"""The floor: the benchmark's team in a plain asyncio script, against the same fake model server.

What the bare library delivers with no server around it: no HTTP, no
database, no event bus. Each run builds two ``AssistantAgent``s with their
own ``OpenAIChatCompletionClient`` (``model_client_stream=True``, usage
requested as SwarmDirector does) in a ``RoundRobinGroupChat`` with
``MaxMessageTermination(replies + 1)``, consumes ``run_stream`` and
timestamps each ``ModelClientStreamingChunkEvent`` as a delivered token.
Concurrent runs share this one process through ``asyncio.gather``, just as
SwarmDirector's runs share its one process.

Runtime tracing is off (``AUTOGEN_DISABLE_RUNTIME_TRACING=true``), as
``swarmdirector serve`` sets it, so the floor is not slowed by a setting
the server does not pay. The loop is the standard asyncio one (a plain
script); the server's uvicorn uses uvloop.

Run by bench/run.py as a worker: ``floor.py --base-url URL`` reads one
batch per stdin line (see workloads.worker_loop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("AUTOGEN_DISABLE_RUNTIME_TRACING", "true")

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import ChatAgent, TaskResult, Team
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import ModelClientStreamingChunkEvent
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from workloads import Batch, Timeline, run_rounds, worker_loop

# what SwarmDirector gives an `openai_compatible` model (app/engine/providers.py)
MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


def build_team(base_url: str, model: str, replies: int) -> tuple[RoundRobinGroupChat, list[OpenAIChatCompletionClient]]:
    clients = [
        OpenAIChatCompletionClient(
            model=model,
            base_url=base_url,
            api_key="x",
            model_info=MODEL_INFO,
            stream_options={"include_usage": True},
        )
        for _ in range(2)
    ]
    agents: list[ChatAgent | Team] = [
        AssistantAgent(name, model_client=client, model_client_stream=True)
        for name, client in zip(("a1", "a2"), clients, strict=True)
    ]
    team = RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(replies + 1))
    return team, clients


async def run_batch(base_url: str, batch: Batch) -> list[Timeline]:
    clock = time.perf_counter

    async def one(start: float) -> Timeline:
        timeline = Timeline(t0=clock())
        token = CancellationToken()
        try:
            async with asyncio.timeout(batch.timeout_s):
                team, clients = build_team(base_url, batch.model, batch.replies)
                try:
                    async for item in team.run_stream(task="go", cancellation_token=token):
                        now = clock()
                        if timeline.first_event is None:
                            timeline.first_event = now
                        if isinstance(item, ModelClientStreamingChunkEvent):
                            timeline.tokens.append(now)
                        elif isinstance(item, TaskResult):
                            timeline.finished = now
                            timeline.status = "succeeded"
                finally:
                    for client in clients:
                        await client.close()
        except TimeoutError:
            token.cancel()
            timeline.status, timeline.error = "timeout", f"no TaskResult within {batch.timeout_s:g} s"
        except Exception as exc:
            token.cancel()
            timeline.status, timeline.error = "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        return timeline.relative_to(start)

    return await run_rounds(batch, one, clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="the fake model server, e.g. http://127.0.0.1:9100/v1")
    args = parser.parse_args()
    worker_loop(lambda batch: run_batch(args.base_url, batch))


if __name__ == "__main__":
    main()
