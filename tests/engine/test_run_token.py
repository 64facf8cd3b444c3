"""A run's cancellation token forgets what it linked once that is done, and still cancels what is pending.

AutoGen's ``run_stream`` links one future per item of a team's output (per streamed chunk); the stock
token kept every one of them for the run's whole life.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken

from app.engine.fake import FakeChatCompletionClient, FakeVariant
from app.engine.interrupts import RunToken


async def test_a_done_future_is_forgotten() -> None:
    token = RunToken()
    loop = asyncio.get_running_loop()
    futures = [token.link_future(loop.create_future()) for _ in range(100)]
    assert token.linked == 100
    for i, future in enumerate(futures):
        future.set_result(i)
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert token.linked == 0
    ref = weakref.ref(futures[0])
    del futures, future
    gc.collect()
    assert ref() is None  # nothing of the token's keeps it alive


async def test_cancel_reaches_pending_futures_and_callbacks() -> None:
    token = RunToken()
    loop = asyncio.get_running_loop()
    done = token.link_future(loop.create_future())
    done.set_result(None)
    pending = token.link_future(loop.create_future())
    called: list[bool] = []
    token.add_callback(lambda: called.append(True))
    token.cancel()
    assert pending.cancelled() and not done.cancelled()
    assert called == [True]
    assert token.is_cancelled()
    late = token.link_future(loop.create_future())
    assert late.cancelled()  # linked after the cancel: cancelled at once, as the stock token does


async def test_a_team_s_stream_leaves_nothing_linked_and_the_stock_token_keeps_one_link_per_item() -> None:
    async def links_after_a_run(token: CancellationToken) -> int:
        agents = [
            AssistantAgent(name, model_client=FakeChatCompletionClient(FakeVariant(words=40)), model_client_stream=True)
            for name in ("a", "b")
        ]
        team = RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(3))
        items = [item async for item in team.run_stream(task="go", cancellation_token=token)]
        assert len(items) > 40  # chunks of two replies, their messages and the result
        return len(token._callbacks) + (token.linked if isinstance(token, RunToken) else 0)

    assert await links_after_a_run(CancellationToken()) > 40  # why RunToken exists
    assert await links_after_a_run(RunToken()) == 0
