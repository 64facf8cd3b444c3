"""The garbage collector's settings: startup's objects frozen, full collections rare and taken when idle."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from app.core import gc_tuning


class Cycle:
    """Garbage only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def manual_gc() -> Iterator[None]:
    """No automatic collection while a test watches what gets collected, and when."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def cyclic_garbage_in_the_oldest_generation() -> weakref.ref[Cycle]:
    obj = Cycle()
    ref = weakref.ref(obj)
    gc.collect(1)  # it survives into the oldest generation, still referenced
    del obj
    gc.collect(1)  # young collections never look at the oldest generation again
    assert ref() is not None, "a young collection freed it: this test would prove nothing"
    assert gc.get_count()[2] > 0
    return ref


def test_tune_freezes_startup_objects_and_makes_full_collections_rarer() -> None:
    gc_tuning.tune()
    assert gc.get_threshold()[2] == gc_tuning.FULL_AFTER
    assert gc.get_freeze_count() > 0
    frozen = gc.get_freeze_count()
    gc_tuning.tune()  # once per process: a second app in the process freezes nothing more
    assert gc.get_freeze_count() == frozen


async def test_an_idle_server_collects_fully(manual_gc: None) -> None:
    ref = cyclic_garbage_in_the_oldest_generation()
    collector = asyncio.create_task(gc_tuning.collect_when_idle(lambda: False, idle_s=0.05))
    try:
        async with asyncio.timeout(10):
            while ref() is not None:
                await asyncio.sleep(0.02)
    finally:
        collector.cancel()
    assert gc.get_count()[2] == 0


async def test_a_busy_server_leaves_full_collections_to_the_interpreter(manual_gc: None) -> None:
    ref = cyclic_garbage_in_the_oldest_generation()
    polls = 0

    def busy() -> bool:
        nonlocal polls
        polls += 1
        return True

    collector = asyncio.create_task(gc_tuning.collect_when_idle(busy, idle_s=0.02))
    try:
        async with asyncio.timeout(10):
            while polls < 20:  # many times over the idle period, asked each time
                await asyncio.sleep(0.01)
    finally:
        collector.cancel()
    assert ref() is not None
    gc.collect()
    assert ref() is None
