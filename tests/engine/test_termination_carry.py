"""A run's termination counts across the stops of its team, and across a rebuild of the team (``Carry``).

AutoGen resets a team's whole condition each time ``run_stream`` stops; a swarm that asks a person
stops at every hand-off to ``user``, and a parked run's team is built again from its spec. Real
AutoGen teams from the factory, on the fake model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from autogen_agentchat.base import OrTerminationCondition, TaskResult, TerminationCondition
from autogen_agentchat.messages import BaseChatMessage, HandoffMessage, TextMessage
from autogen_agentchat.teams import BaseGroupChat
from autogen_core import CancellationToken

from app.engine.calls import CallPolicy, ModelCall
from app.engine.factory import (
    Carry,
    InputFunc,
    RunTimeout,
    TeamFactory,
    UsageMeter,
    limit_reached,
)
from app.engine.providers import ModelRegistry
from app.engine.tools import ToolRegistry
from tests.conftest import make_settings


def step(text: str | None = None, handoff: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        text=text,
        reasoning=None,
        tool_calls=None,
        handoff=handoff,
        error=None,
        error_kind="model_error",
        hang=None,
        delay_ms=None,
    )


def member(name: str, script: list[SimpleNamespace], *, handoffs: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        kind="assistant",
        description="",
        system_message=None,
        model="fake/t5",
        model_options=SimpleNamespace(temperature=None, max_tokens=None, script=script),
        tools=[],
        handoffs=list(handoffs),
        streaming=False,
        reflect_on_tool_use=False,
        max_tool_iterations=1,
    )


def person(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, kind="user_proxy", description="", handoffs=[])


def team(members: list[SimpleNamespace], kind: str = "round_robin", **stop: Any) -> SimpleNamespace:
    limits = {"max_messages": None, "text_mention": None, "timeout_s": None, "token_budget": None} | stop
    return SimpleNamespace(
        kind=kind,
        members=members,
        termination=SimpleNamespace(**limits),
        selector_model=None,
        selector_prompt=None,
        allow_repeated_speaker=False,
        edges=None,
        start=None,
    )


@pytest.fixture
async def factory(tmp_path: Path) -> AsyncIterator[TeamFactory]:
    models = ModelRegistry(make_settings(tmp_path))
    yield TeamFactory(models, ToolRegistry(), default_max_messages=10, policy=CallPolicy(5, 0, 0))
    await models.aclose()


async def ask_the_user_until_done(built: BaseGroupChat, task: str) -> tuple[list[BaseChatMessage], str | None]:
    """Runs a swarm the way ``execution._consume`` does: a hand-off to ``user`` is answered, and the run
    goes on, unless the stop also met a limit of the run."""
    said: list[BaseChatMessage] = []
    current: str | HandoffMessage = task
    for answer in range(1, 20):
        to_user: HandoffMessage | None = None
        stop_reason: str | None = None
        async for item in built.run_stream(task=current, cancellation_token=CancellationToken()):
            if isinstance(item, TaskResult):
                stop_reason = item.stop_reason
                last = item.messages[-1] if item.messages else None
                if isinstance(last, HandoffMessage) and last.target == "user":
                    to_user = last
            elif isinstance(item, BaseChatMessage):
                said.append(item)
        if to_user is None or limit_reached(built):
            return said, stop_reason
        current = HandoffMessage(source="user", target=to_user.source, content=f"Answer {answer}.")
    raise AssertionError(f"the run never ended: {len(said)} chat messages")


async def test_a_swarm_that_asks_the_user_stops_at_max_messages_across_the_hand_offs(factory: TeamFactory) -> None:
    asks = [step(handoff="user") for _ in range(4)]
    alice = member("alice", [*asks, step("Done.")], handoffs=("user",))
    said, stop_reason = await ask_the_user_until_done(factory.build_team(team([alice], "swarm", max_messages=5)), "Go.")
    assert [(m.source, type(m).__name__) for m in said] == [
        ("user", "TextMessage"),
        ("alice", "HandoffMessage"),
        ("user", "HandoffMessage"),  # answer 1
        ("alice", "HandoffMessage"),
        ("user", "HandoffMessage"),  # answer 2: the fifth message
    ]
    assert stop_reason is not None and "Maximum number of messages 5 reached" in stop_reason


async def test_a_limit_met_by_the_hand_off_itself_ends_the_run(factory: TeamFactory) -> None:
    alice = member("alice", [step(handoff="user") for _ in range(3)], handoffs=("user",))
    built = factory.build_team(team([alice], "swarm", max_messages=4))
    said, stop_reason = await ask_the_user_until_done(built, "Go.")
    assert [m.source for m in said] == ["user", "alice", "user", "alice"]
    assert (
        stop_reason
        == "Maximum number of messages 4 reached, current message count: 4, Handoff to user from alice detected."
    )
    assert limit_reached(built)
    # asked anyway, the team would drop the person's answer: AutoGen stops a met condition's team at once
    answer = HandoffMessage(source="user", target="alice", content="Late.")
    result = await built.run(task=answer)
    assert result.messages == [] and result.stop_reason == "The group chat has already terminated."


async def test_the_limit_is_not_reached_by_a_plain_hand_off(factory: TeamFactory) -> None:
    alice = member("alice", [step(handoff="user")], handoffs=("user",))
    built = factory.build_team(team([alice], "swarm", max_messages=9))
    async for _ in built.run_stream(task="Go."):
        pass
    assert not limit_reached(built)


class Park(Exception):
    """The person is not here: the run parks at their turn (``UserProxyAgent``'s input raises)."""


def round_robin() -> SimpleNamespace:
    writer = member("writer", [step("A draft.") for _ in range(3)])
    critic = member("critic", [step("Looks fine.") for _ in range(3)])
    return team([writer, critic, person("editor")], max_messages=6)


def said(messages: list[BaseChatMessage]) -> list[tuple[str, str]]:
    return [(m.source, m.to_text()) for m in messages]


async def test_a_rebuilt_round_robin_stops_where_the_uninterrupted_run_does(factory: TeamFactory) -> None:
    def answering(name: str) -> InputFunc:
        async def answer(prompt: str, token: CancellationToken | None) -> str:
            return "Go on."

        return answer

    def parking(name: str) -> InputFunc:
        async def park(prompt: str, token: CancellationToken | None) -> str:
            raise Park(name)

        return park

    whole = await factory.build_team(round_robin(), inputs=answering).run(task="Write.")
    reference = [m for m in whole.messages if isinstance(m, BaseChatMessage)]
    assert len(reference) == 6, "the run ends at max_messages, the editor's answer included"

    first = factory.build_team(round_robin(), inputs=parking)
    before: list[BaseChatMessage] = []
    with pytest.raises(RuntimeError):  # the editor's turn parks the run: three messages so far
        async for item in first.run_stream(task="Write."):
            if isinstance(item, BaseChatMessage):
                before.append(item)
    state = await first.save_state()
    assert len(before) == 3

    again = factory.build_team(round_robin(), inputs=parking, carry=Carry(messages=len(before)))
    await again.load_state(state)
    result = await again.run(task=TextMessage(source="editor", content="Go on."))
    after = [m for m in result.messages if isinstance(m, BaseChatMessage)]
    assert said(before + after) == said(reference)
    assert result.stop_reason == whole.stop_reason == "Maximum number of messages 6 reached, current message count: 6"


def spend(meter: UsageMeter, prompt: int, completion: int) -> None:
    meter.add(ModelCall("writer", "fake/t5", None, 0, None, prompt, completion, 1))  # type: ignore[arg-type]


async def test_a_rebuilt_team_counts_the_tokens_its_run_billed_before(factory: TeamFactory) -> None:
    spec = team([member("writer", [step("A draft.") for _ in range(4)])], max_messages=5, token_budget=1000)
    fresh = await factory.build_team(spec).run(task="Write.")
    assert [m.source for m in fresh.messages] == ["user", "writer", "writer", "writer", "writer"]
    # 999 tokens billed before the team was built again: the first model call goes over the budget
    carried = await factory.build_team(spec, carry=Carry(prompt_tokens=990, completion_tokens=9)).run(task="Write.")
    assert [m.source for m in carried.messages] == ["user", "writer"]
    assert carried.stop_reason is not None and carried.stop_reason.startswith("Token budget reached")

    meter = UsageMeter(990, 9)
    budget = factory.termination(spec, meter=meter)
    assert await budget([]) is None
    spend(meter, 1, 0)
    assert await budget([]) is not None


def timeout_of(condition: TerminationCondition) -> RunTimeout:
    if isinstance(condition, RunTimeout):
        return condition
    assert isinstance(condition, OrTerminationCondition)
    [timeout] = [timeout_of(c) for c in condition._conditions if isinstance(c, RunTimeout | OrTerminationCondition)]
    return timeout


async def test_a_rebuilt_team_has_only_the_rest_of_its_timeout(factory: TeamFactory) -> None:
    spec = team([member("writer", [])], max_messages=5, timeout_s=100.0)
    left = timeout_of(factory.termination(spec, carry=Carry(elapsed_s=40.0))).remaining
    assert 59.0 < left <= 60.0
    dumped = factory.termination(spec, carry=Carry(elapsed_s=40.0)).dump_component()
    assert dumped.config["conditions"][1] == {
        "provider": "autogen_agentchat.conditions.TimeoutTermination",
        "component_type": "termination",
        "version": 1,
        "component_version": 1,
        "description": dumped.config["conditions"][1]["description"],
        "label": "RunTimeout",
        "config": {"timeout_seconds": 100.0},
    }
    spent = factory.termination(spec, carry=Carry(elapsed_s=100.0))
    stop = await spent([TextMessage(source="user", content="Go on.")])
    assert stop is not None and stop.content == "Timeout of 100.0 seconds reached"


async def test_the_timeout_does_not_count_a_wait_between_two_stops() -> None:
    now = [0.0]
    timeout = RunTimeout(10.0, spent=2.0, clock=lambda: now[0])
    now[0] = 3.0
    assert await timeout([]) is None and timeout.remaining == 5.0
    await timeout.reset()  # the team stops: a person is asked
    now[0] = 1000.0
    assert timeout.remaining == 5.0
    assert await timeout([]) is None  # their answer: the clock goes on
    now[0] = 1004.0
    assert await timeout([]) is None and timeout.remaining == 1.0
    now[0] = 1005.0
    assert await timeout([]) is not None and timeout.terminated


async def test_a_carried_count_at_the_limit_stops_at_the_next_message(factory: TeamFactory) -> None:
    spec = team([member("writer", [])], max_messages=5)
    condition = factory.termination(spec, carry=Carry(messages=7))
    assert not condition.terminated
    stop = await condition([TextMessage(source="user", content="Go on.")])
    assert stop is not None and stop.content.startswith("Maximum number of messages 5 reached")


async def test_history_replayed_with_the_task_counts_on_top_of_max_messages(factory: TeamFactory) -> None:
    spec = team([member("writer", [])], max_messages=2)
    condition = factory.termination(spec, history_len=3, carry=Carry(messages=3))
    history = [TextMessage(source="user", content="Earlier.")]
    assert await condition(history) is None  # 4 of 2 + 3
    assert await condition(history) is not None
    await condition.reset()
    assert condition.terminated, "AutoGen's reset at a stop leaves the run's count"


async def test_a_combined_condition_dumps_as_autogens(factory: TeamFactory) -> None:
    spec = team([member("a", [], handoffs=("user",))], "swarm", max_messages=5, text_mention="DONE", token_budget=9)
    # the team itself has no dump (its guarded model clients have none): its condition has
    dumped = factory.termination(spec, meter=UsageMeter(), carry=Carry(messages=3)).dump_component().model_dump()

    def leaves(component: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        inner = component["config"].get("conditions")
        return [leaf for c in inner for leaf in leaves(c)] if inner else [(component["provider"], component["config"])]

    assert dumped["provider"] == "autogen_agentchat.base.OrTerminationCondition"
    assert leaves(dumped) == [
        ("autogen_agentchat.conditions.MaxMessageTermination", {"max_messages": 5, "include_agent_event": False}),
        ("autogen_agentchat.conditions.TextMentionTermination", {"text": "DONE"}),
        ("autogen_agentchat.conditions.TokenUsageTermination", {"max_total_token": 9}),
        ("autogen_agentchat.conditions.HandoffTermination", {"target": "user"}),
    ]
