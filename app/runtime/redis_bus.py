"""The run event streams in Redis: what lets any replica replay and follow any run (distributed mode).

Every event a process publishes is also appended to the run's Redis stream
``<prefix>:run:<run_id>`` with the stream id ``<seq>-0``, so a watcher on any
replica resumes with ``XREAD`` from exactly its last seq. Appends keep the
publish order (one writer task per process, pipelined), and Redis refuses an
id that is not greater than the stream's last one: a worker that lost its
lease can never append behind the event that settled its run.

A stream is kept whole while its run is live and for ``retention_s`` after
its terminal event; lifecycle and message events are in the database for
good, so a watcher that comes later is served from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from app.core.envelope import Envelope

log = structlog.get_logger(__name__)

FIELD = b"e"
MAX_PIPELINE = 1000
MAX_BACKLOG = 200_000  # events held while Redis is away; beyond it deltas are dropped (replay detail only)


def _seq_of(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.split("-", 1)[0])


class RedisStreams:
    def __init__(self, redis: Redis, prefix: str, retention_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_s = max(1, int(retention_s))
        self._out: deque[Envelope] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    # -- writing ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="redis-streams")

    async def stop(self, within: float = 5.0) -> None:
        """Write out what is queued (for at most ``within`` seconds), then end."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._out:
                    self._wakeup.set()
                    await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def append(self, env: Envelope) -> None:
        """Queue an event for its run's stream (never waits; called from ``EventBus.publish``)."""
        if len(self._out) >= MAX_BACKLOG and not env.durable:
            self.dropped += 1
            return
        self._out.append(env)
        self._wakeup.set()

    async def _loop(self) -> None:
        delay = 0.05
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._out:
                batch = [self._out.popleft() for _ in range(min(len(self._out), MAX_PIPELINE))]
                try:
                    await self.write(batch)
                except (RedisError, OSError) as exc:
                    # keep them, in order, and try again: watchers on other replicas wait, none misses one
                    self._out.extendleft(reversed(batch))
                    log.warning("redis_append_failed", error=f"{type(exc).__name__}: {exc}", backlog=len(self._out))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                else:
                    delay = 0.05

    async def write(self, events: list[Envelope]) -> None:
        """Append events now (in order); a terminal event starts its stream's retention clock."""
        pipe = self.redis.pipeline(transaction=False)
        for env in events:
            key = self.key(env.run_id)
            pipe.xadd(key, {FIELD: env.json()}, id=f"{env.seq}-0")
            if env.terminal:
                pipe.expire(key, self.retention_s)
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, ResponseError):
                # an id at or below the stream's last: this event was superseded (a lapsed lease)
                log.warning("redis_append_refused", error=str(result))
            elif isinstance(result, Exception):
                raise result

    # -- reading ---------------------------------------------------------------------------------

    async def top_seq(self, run_id: str) -> int:
        """The seq of the last event in the run's stream (0 when there is none)."""
        rows: Any = await self.redis.xrevrange(self.key(run_id), count=1)
        return _seq_of(rows[0][0]) if rows else 0

    async def tail(self, run_id: str, after: int) -> list[Envelope]:
        """Every event of the run's stream after ``after``, at once (a lost run's unstored end)."""
        entries: Any = await self.redis.xrange(self.key(run_id), min=f"{after + 1}-0", max="+")
        return [Envelope.from_json(fields[FIELD]) for _id, fields in entries]

    async def read(self, run_id: str, after: int, *, block_s: float, count: int = 1000) -> list[Envelope]:
        """The events after ``after``, waiting up to ``block_s`` for the first one."""
        block_ms = max(1, int(block_s * 1000))
        reply: Any = await self.redis.xread({self.key(run_id): f"{after}-0"}, count=count, block=block_ms)
        if not reply:
            return []
        _key, entries = reply[0]
        return [Envelope.from_json(fields[FIELD]) for _id, fields in entries]
