"""``Coalesced``: callers that arrive together share a lookup, and none is answered from before it arrived."""

from __future__ import annotations

import asyncio

import pytest

from app.core.coalesce import Coalesced


class Source:
    """A value that changes, read by lookups that wait at a gate before they answer."""

    def __init__(self) -> None:
        self.value = 0
        self.reads: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def lookup(self, key: str) -> int:
        seen = self.value  # what this lookup read, when it started
        self.reads.append((key, seen))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError(f"lookup of {key} failed")
        return seen


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_shares_two_lookups_and_nobody_gets_an_answer_from_before_it_came() -> None:
    source = Source()
    shared = Coalesced(source.lookup)
    first = asyncio.create_task(shared("k"))
    await settle()  # the first lookup is under way: it read 0
    source.value = 1  # say, a key created now: every caller from here on must see it
    later = [asyncio.create_task(shared("k")) for _ in range(50)]
    await settle()
    source.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1] * 50
    assert source.reads == [("k", 0), ("k", 1)]


async def test_keys_do_not_share_and_a_quiet_key_starts_at_once() -> None:
    source = Source()
    shared = Coalesced(source.lookup)
    source.gate.set()
    assert await asyncio.gather(shared("a"), shared("b")) == [0, 0]
    assert sorted(source.reads) == [("a", 0), ("b", 0)]
    source.value = 2
    assert await shared("a") == 2  # nothing under way: a lookup of its own, at once


async def test_a_failure_reaches_that_lookups_callers_only() -> None:
    source = Source()
    shared = Coalesced(source.lookup)
    source.fail = True
    first = asyncio.create_task(shared("k"))
    await settle()
    second = asyncio.create_task(shared("k"))
    await settle()
    source.gate.set()
    with pytest.raises(RuntimeError, match="failed"):
        await first
    with pytest.raises(RuntimeError, match="failed"):
        await second  # its own lookup, which failed too
    source.fail = False
    assert await shared("k") == 0
    assert len(source.reads) == 3


async def test_a_caller_that_gives_up_leaves_the_lookup_to_the_others() -> None:
    source = Source()
    shared = Coalesced(source.lookup)
    first = asyncio.create_task(shared("k"))
    await settle()
    followers = [asyncio.create_task(shared("k")) for _ in range(2)]
    await settle()
    first.cancel()
    followers[0].cancel()
    await settle()
    source.gate.set()
    assert await followers[1] == 0
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(source.reads) == 2  # both lookups ran to their end
