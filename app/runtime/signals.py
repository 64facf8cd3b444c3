"""Signals between processes over Redis (distributed mode): wake-ups, cancels, and answers to input requests.

Two pub/sub channels: ``<prefix>:wake`` (a run may be claimable: executors
look at the queue now rather than at their next poll) and ``<prefix>:signals``
(a cancel or an input for a run, acted on by whichever process executes it).
An input needs an answer (accepted, or why not), so its signal names a reply
list that the executor pushes to and the asking replica pops with a timeout.

Pub/sub loses messages while a process is disconnected; nothing depends on a
signal alone: the queue is also polled, and a cancel is also written to the
run's row, which the executor reads with every lease renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
REPLY_TTL_S = 30


class Signals:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.wake_channel = f"{prefix}:wake"
        self.signal_channel = f"{prefix}:signals"
        self._reply_prefix = f"{prefix}:reply:"
        self._task: asyncio.Task[None] | None = None
        self._handler: Handler | None = None
        self._on_wake: Callable[[], None] | None = None
        self._handling: set[asyncio.Task[None]] = set()

    async def start(self, handler: Handler, on_wake: Callable[[], None]) -> None:
        self._handler = handler
        self._on_wake = on_wake
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.wake_channel, self.signal_channel)
        self._task = asyncio.create_task(self._listen(pubsub), name="redis-signals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._handling):
            task.cancel()

    async def _listen(self, pubsub: Any) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except (RedisError, OSError) as exc:
                    log.warning("redis_signals_lost", error=f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(RedisError, OSError):
                        # a new connection; the queue poll covers any wake-up missed meanwhile
                        await pubsub.reset()
                        await pubsub.subscribe(self.wake_channel, self.signal_channel)
                        if self._on_wake is not None:
                            self._on_wake()
                    continue
                if message is None or message.get("type") != "message":
                    continue
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if channel == self.wake_channel:
                    if self._on_wake is not None:
                        self._on_wake()
                    continue
                try:
                    signal = orjson.loads(message["data"])
                except orjson.JSONDecodeError:
                    continue
                task = asyncio.create_task(self._handle(signal))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _handle(self, signal: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            answer = await self._handler(signal)
            reply = signal.get("reply")
            if answer is not None and isinstance(reply, str) and reply.startswith(self._reply_prefix):
                pipe = self.redis.pipeline(transaction=False)
                pipe.rpush(reply, orjson.dumps(answer))
                pipe.expire(reply, REPLY_TTL_S)
                await pipe.execute()
        except Exception as exc:
            log.warning("signal_failed", kind=signal.get("kind"), run_id=signal.get("run_id"), error=str(exc))

    # -- sending ---------------------------------------------------------------------------------

    async def wake(self) -> None:
        """Tell every executor to look at the queue now."""
        try:
            await self.redis.publish(self.wake_channel, b"1")
        except (RedisError, OSError) as exc:
            log.warning("redis_wake_failed", error=str(exc))  # the executors' poll finds the run anyway

    async def send(self, signal: dict[str, Any]) -> None:
        await self.redis.publish(self.signal_channel, orjson.dumps(signal))

    async def ask(self, signal: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send a signal that wants an answer; None when no process answered within ``timeout_s``."""
        reply = f"{self._reply_prefix}{uuid.uuid4().hex}"
        await self.send({**signal, "reply": reply})
        popped = await self.redis.blpop([reply], timeout=timeout_s)
        if popped is None:
            return None
        answer: dict[str, Any] = orjson.loads(popped[1])
        return answer
