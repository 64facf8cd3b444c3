"""The journal's bound: publication never runs more than ``UNSTORED_MAX`` seqs ahead of the stored log.

The recorder here stores nothing until the test says so (``store``), as a database far behind would:
what the bound is about is exactly what the recorder has not done yet.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.core.envelope import UNSTORED_MAX, Envelope
from app.core.metrics import Metrics
from app.runtime.bus import EventBus
from app.runtime.recorder import StorageError
from app.runtime.run.journal import Journal

RUN = "run_bound"


class StalledRecorder:
    """Takes every write and stores it only when told; a commit fails while ``down``."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.recorded: list[Envelope] = []
        self.flushes_asked = 0
        self.down = False

    def record(self, env: Envelope) -> None:
        self.recorded.append(env)

    def flush_soon(self) -> None:
        self.flushes_asked += 1

    def store(self, upto: int) -> None:
        self.bus.mark_flushed(RUN, upto)

    async def commit(self, env: Envelope, change: Any = None, *, then: Envelope | None = None) -> None:
        if self.down:
            raise StorageError("down")
        self.store(env.seq)


def setup(stored: int = 1) -> tuple[Journal, StalledRecorder, EventBus, list[int]]:
    bus = EventBus(watcher_buffer=10 * UNSTORED_MAX)
    bus.open(RUN, flushed_seq=stored)
    recorder = StalledRecorder(bus)
    journal = Journal(RUN, bus, recorder, Metrics())  # type: ignore[arg-type]
    journal.resume(stored, stored=stored)
    seen: list[int] = []
    bus.mirror = lambda env: seen.append(env.seq)  # every event published, as Redis would get them
    return journal, recorder, bus, seen


def delta(journal: Journal, n: int) -> None:
    for _ in range(n):
        journal.stream("message.delta", {"message_id": "m1", "agent": "a", "text": "x"})


async def test_deltas_past_the_bound_are_held_in_order_and_published_once_stored() -> None:
    journal, recorder, _bus, seen = setup(stored=1)
    delta(journal, UNSTORED_MAX + 500)
    assert seen == list(range(2, 1 + UNSTORED_MAX + 1)), "published up to the stored log + the bound"
    assert len(recorder.recorded) == UNSTORED_MAX + 500, "every delta is recorded: none dropped"
    assert recorder.flushes_asked > 0, "past half the bound, a write is asked for at once"

    recorder.store(300)  # the database catches up a little: the bound moves, the held ones follow
    assert seen == list(range(2, 300 + UNSTORED_MAX + 1))
    delta(journal, 10)  # later deltas wait behind the held ones, never overtake them
    assert seen[-1] == 300 + UNSTORED_MAX
    recorder.store(1 + UNSTORED_MAX + 510)
    assert seen == list(range(2, 1 + UNSTORED_MAX + 510 + 1))


async def test_a_durable_event_publishes_what_was_held_before_it() -> None:
    journal, _recorder, _bus, seen = setup(stored=1)
    delta(journal, UNSTORED_MAX + 20)
    env = await journal.append("message.completed", {"message_id": "m1"})
    last = 1 + UNSTORED_MAX + 20
    assert env.seq == last + 1
    assert seen == list(range(2, last + 2)), "stored with it, so published before it, in order"
    delta(journal, 5)  # and the bound counts from there
    assert seen[-1] == last + 6


async def test_an_unstored_end_past_the_bound_is_not_published_and_watchers_read_on_from_storage() -> None:
    journal, recorder, bus, seen = setup(stored=1)
    delta(journal, UNSTORED_MAX + 3)
    recorder.down = True
    end = journal.envelope("run.failed", {"status": "failed"})
    with pytest.raises(StorageError):
        await journal.commit(end)
    assert end.seq not in seen and max(seen) == 1 + UNSTORED_MAX
    assert not bus.is_open(RUN), "its watchers were told to read on from storage"


async def test_an_unstored_end_within_the_bound_is_published() -> None:
    journal, recorder, _bus, seen = setup(stored=1)
    delta(journal, 10)
    recorder.down = True
    end = journal.envelope("run.failed", {"status": "failed"})
    with pytest.raises(StorageError):
        await journal.commit(end)
    assert seen == list(range(2, 13))


async def test_a_resumed_run_counts_the_bound_from_its_stored_log() -> None:
    # a retry on another worker: its channel knows nothing stored yet, the run's log does
    bus = EventBus(watcher_buffer=10 * UNSTORED_MAX)
    bus.open(RUN, flushed_seq=0)
    recorder = StalledRecorder(bus)
    journal = Journal(RUN, bus, recorder, Metrics())  # type: ignore[arg-type]
    journal.resume(50_000, stored=50_000)
    sub, _ = bus.subscribe(RUN)
    assert sub is not None
    delta(journal, 100)
    assert [e.seq for e in await asyncio.wait_for(sub.next_batch(), 1)] == list(range(50_001, 50_101))


def test_the_docs_give_the_bound_the_code_has() -> None:
    events = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text("utf-8")
    assert f"`lost_after_seq + {UNSTORED_MAX} + 1`" in events
