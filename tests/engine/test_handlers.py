"""AutoGen's handler discovery, cached per class (app/engine/handlers.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer
from autogen_agentchat.teams._group_chat._graph._digraph_group_chat import GraphFlowManager
from autogen_agentchat.teams._group_chat._round_robin_group_chat import RoundRobinGroupChatManager
from autogen_agentchat.teams._group_chat._selector_group_chat import SelectorGroupChatManager
from autogen_agentchat.teams._group_chat._swarm_group_chat import SwarmGroupChatManager
from autogen_core import MessageContext, RoutedAgent, event, rpc

import app.engine.factory  # noqa: F401  (installs the caches, as the server does)
from app.engine.handlers import _ORIGINAL_DISCOVER, _ORIGINAL_HANDLES, cache_handler_discovery


@dataclass
class Ping:
    text: str


@dataclass
class Note:
    text: str


walks: list[type] = []


class CountingMeta(type(RoutedAgent)):  # type: ignore[misc]
    def __dir__(cls) -> list[str]:
        walks.append(cls)
        return list(super().__dir__())


class Echo(RoutedAgent, metaclass=CountingMeta):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return Ping(message.text)

    @event
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        return None


CLASSES = [
    ChatAgentContainer,
    RoundRobinGroupChatManager,
    SelectorGroupChatManager,
    SwarmGroupChatManager,
    GraphFlowManager,
    Echo,
]


def _names(handlers: Any) -> list[str]:
    return sorted(h.__name__ for h in handlers)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_cached_answers_are_autogens_own(cls: type[RoutedAgent]) -> None:
    assert RoutedAgent.__dict__["_discover_handlers"].__func__ is not _ORIGINAL_DISCOVER
    for _ in range(2):  # first computed, then remembered
        assert cls._discover_handlers() == _ORIGINAL_DISCOVER(cls)
        assert cls._handles_types() and [t for t, _ in cls._handles_types()] == [t for t, _ in _ORIGINAL_HANDLES(cls)]
    assert _names(cls._discover_handlers())  # every one of them handles something


def test_a_class_is_walked_once_however_many_agents_it_makes() -> None:
    class Fresh(Echo):
        pass

    walks.clear()
    agents = [Fresh() for _ in range(5)]
    Fresh._handles_types()
    assert walks == [Fresh]
    assert _names(agents[0]._handlers[Ping]) == ["on_ping"]
    assert _names(agents[4]._handlers[Note]) == ["on_note"]


def test_an_answer_handed_out_cannot_change_the_next() -> None:
    first = Echo._discover_handlers()
    first.clear()
    assert _names(Echo._discover_handlers()) == ["on_note", "on_ping"]


def test_installing_twice_keeps_one_cache() -> None:
    before = RoutedAgent.__dict__["_discover_handlers"]
    cache_handler_discovery()
    assert RoutedAgent.__dict__["_discover_handlers"] is before


async def test_agents_still_answer_through_the_runtime() -> None:
    from autogen_core import AgentId, SingleThreadedAgentRuntime

    runtime = SingleThreadedAgentRuntime()
    await Echo.register(runtime, "echo", Echo)
    runtime.start()
    try:
        reply = await runtime.send_message(Ping("hi"), AgentId("echo", "default"))
    finally:
        await runtime.stop_when_idle()
    assert reply == Ping("hi")
