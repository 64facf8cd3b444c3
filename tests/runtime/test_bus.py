"""The in-process event bus: fan-out, bounded watcher buffers, and the pending window."""

from __future__ import annotations

import asyncio

from app.core.db import utcnow
from app.core.envelope import Envelope
from app.runtime.bus import EventBus


def env(seq: int, type_: str = "message.delta") -> Envelope:
    return Envelope("run_x", seq, type_, utcnow(), {"text": f"t{seq}"})


async def test_each_watcher_gets_every_event_in_order() -> None:
    bus = EventBus(watcher_buffer=100)
    bus.open("run_x", flushed_seq=0)
    (a, _), (b, _) = bus.subscribe("run_x"), bus.subscribe("run_x")
    assert a is not None and b is not None
    for seq in range(1, 6):
        bus.publish(env(seq))
    assert [e.seq for e in await a.next_batch()] == [1, 2, 3, 4, 5]
    assert [e.seq for e in await b.next_batch()] == [1, 2, 3, 4, 5]
    assert bus.live_watchers() == 2


async def test_a_full_watcher_is_cut_loose_and_the_others_are_not_slowed() -> None:
    bus = EventBus(watcher_buffer=4)
    bus.open("run_x", flushed_seq=0)
    slow, _ = bus.subscribe("run_x")
    fast, _ = bus.subscribe("run_x")
    assert slow is not None and fast is not None
    received = []
    for seq in range(1, 11):
        bus.publish(env(seq))  # never waits, whatever the watchers do
        received += [e.seq for e in await fast.next_batch()]
    assert received == list(range(1, 11))
    assert slow.lagged
    assert await slow.next_batch() == []  # a lagged watcher gets nothing more from the live channel
    assert bus.live_watchers() == 1


async def test_pending_holds_exactly_the_unstored_events() -> None:
    bus = EventBus(watcher_buffer=100)
    bus.open("run_x", flushed_seq=1)
    for seq in range(2, 7):
        bus.publish(env(seq))
    _, pending = bus.subscribe("run_x")
    assert [e.seq for e in pending] == [2, 3, 4, 5, 6]
    bus.mark_flushed("run_x", 4)
    _, pending = bus.subscribe("run_x")
    assert [e.seq for e in pending] == [5, 6]


async def test_the_channel_closes_once_its_terminal_event_is_stored() -> None:
    bus = EventBus(watcher_buffer=100)
    bus.open("run_x", flushed_seq=0)
    waiter = asyncio.ensure_future(bus.wait_terminal("run_x"))
    bus.publish(env(1))
    bus.publish(env(2, "run.completed"))
    assert bus.is_open("run_x")  # seq 2 is not stored yet
    bus.mark_flushed("run_x", 2)
    assert not bus.is_open("run_x")
    await asyncio.wait_for(waiter, 1)
    assert bus.subscribe("run_x") == (None, [])
