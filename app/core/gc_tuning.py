"""Python's cyclic garbage collector, set for a server that holds many live runs.

Measured under issue 7's W2: with the interpreter's defaults, a full
(generation 2) collection walks every object of every live run and of every
module loaded, with the event loop stopped. It took 120 ms with 50 live runs
and up to 310 ms with 200, six times in one 200-run batch: those pauses were
the worst gaps between tokens, and 1.2-1.4 s of the batch's CPU.

So, once the server has started: what startup built (modules, schemas, the
app) is collected once and frozen (``gc.freeze``), so that no collection walks
it again; a full collection waits for 100 collections of the middle
generation instead of 10; and when no run has been live for ``IDLE_S``, the
server collects fully itself, while nothing is streaming. Young collections
are left as they are: they are short (about 1-5 ms) and free most garbage
(AutoGen builds a team of cyclic objects per run; they die with the run).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

FULL_AFTER = 100  # middle-generation collections before a full one (the interpreter's default is 10)
IDLE_S = 2.0  # no live run for this long: collect fully now, off the token path

_tuned = False


def tune() -> None:
    """Freeze what startup built and make full collections rarer (once per process)."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)
    log.debug("gc_tuned", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())


async def collect_when_idle(busy: Callable[[], bool], idle_s: float = IDLE_S) -> None:
    """Collect fully once the server has been without live runs for ``idle_s`` (and something may be due)."""
    quiet_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(idle_s / 2)
        if busy():
            quiet_since = None
            continue
        now = loop.time()
        if quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= idle_s and gc.get_count()[2] > 0:
            # some middle-generation survivors wait for a full collection: take it now
            gc.collect()
            quiet_since = now
