"""Signals between processes over Redis (distributed mode): wake-ups, cancels, and answers to input requests.

Two pub/sub channels: ``<prefix>:wake`` (a run may be claimable: executors
look at the queue now rather than at their next poll) and ``<prefix>:signals``
(a cancel or an input for a run, acted on by whichever process executes it).
An input needs an answer (accepted, or why not), so its signal names a reply
list that the executor pushes to and the asking replica pops with a timeout.
It also carries a deadline (wall-clock, a second before the asker stops
waiting): an executor that gets it later (its loop was blocked, its process
paused) drops it, so an answer the client was told was not delivered is not
delivered later behind its back.

Pub/sub loses messages while a process is disconnected; nothing depends on a
signal alone: the queue is also polled, and a cancel is also written to the
run's row, which the executor reads with every lease renewal. An input answer
has no such second path, so it is refused (``SignalsUnavailable``, a 503) when
it cannot be delivered, never left to a timeout the client cannot read.

The listener outlives Redis: when its connection is lost (a Redis restart) it
says so (``redis_signals_lost``), subscribes again on a new connection with a
capped exponential backoff, and says so again (``redis_signals_reconnected``);
``listening`` is false meanwhile, and ``/readyz`` with it. After a reconnect it
wakes the claim loop, since a wake-up may have been missed; a cancel missed
meanwhile reaches its executor with the next lease renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app.core.errors import Unavailable

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
REPLY_TTL_S = 30
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0
# an ask waits this much longer than its reply timeout for Redis itself (redis-py retries a while)
ASK_MARGIN_S = 2.0
# an executor acts on an ask until this long before its asker stops waiting (and clocks may differ)
ASK_GRACE_S = 1.0


class SignalsUnavailable(Unavailable):
    """A signal that needs an answer could not be delivered: Redis is unreachable, or no process
    executing the run answered. Nothing was acted on as far as the caller can tell; retrying is safe."""

    code = "signals_unavailable"
    title = "Signals unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


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
        self._listening = False

    @property
    def listening(self) -> bool:
        """Subscribed now: signals sent to this process reach it (readiness)."""
        return self._listening

    async def start(self, handler: Handler, on_wake: Callable[[], None]) -> None:
        """Subscribe (raises when Redis does not answer: a process does not start without it), then listen."""
        self._handler = handler
        self._on_wake = on_wake
        pubsub = await self._subscribe()
        self._task = asyncio.create_task(self._listen(pubsub), name="redis-signals")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._handling):
            task.cancel()

    async def _subscribe(self) -> PubSub:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.wake_channel, self.signal_channel)
        except BaseException:
            await _close(pubsub)
            raise
        self._listening = True
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        """Receive on ``pubsub`` until its connection fails, then on a new one, until stopped."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._receive(pubsub)
            except Exception as exc:  # whatever the connection raised: this task must not end here
                log.warning("redis_signals_lost", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._listening = False
                await _close(pubsub)
            lost_at = loop.time()
            pubsub, attempts = await self._resubscribe()
            log.info("redis_signals_reconnected", down_s=round(loop.time() - lost_at, 3), attempts=attempts)
            if self._on_wake is not None:
                self._on_wake()  # a wake-up may have been missed meanwhile

    async def _resubscribe(self) -> tuple[PubSub, int]:
        """A new subscription, tried with a capped exponential backoff (jittered, so that every
        process does not come back at the same instant); and how many tries it took."""
        delay = RECONNECT_MIN_S
        attempts = 0
        while True:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            attempts += 1
            try:
                return await self._subscribe(), attempts
            except Exception as exc:
                log.debug("redis_signals_reconnect_failed", attempts=attempts, error=type(exc).__name__)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _receive(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
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

    async def _handle(self, signal: dict[str, Any]) -> None:
        assert self._handler is not None
        act_before = signal.get("act_before")
        if isinstance(act_before, int | float) and time.time() > act_before:
            # its asker has given up (or is about to): acting now would contradict what it answered
            log.info("signal_expired", kind=signal.get("kind"), run_id=signal.get("run_id"))
            return
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
        if not self._listening:
            return  # Redis is away: the executors' poll finds the run anyway
        try:
            await self.redis.publish(self.wake_channel, b"1")
        except (RedisError, OSError) as exc:
            log.warning("redis_wake_failed", error=str(exc))  # the executors' poll finds the run anyway

    async def send(self, signal: dict[str, Any]) -> None:
        """Publish a signal that may be lost (a cancel: the run's row carries it too)."""
        if not self._listening:
            log.warning("redis_signal_skipped", kind=signal.get("kind"), run_id=signal.get("run_id"))
            return
        try:
            await self.redis.publish(self.signal_channel, orjson.dumps(signal))
        except (RedisError, OSError) as exc:
            log.warning("redis_signal_failed", kind=signal.get("kind"), run_id=signal.get("run_id"), error=str(exc))

    async def ask(self, signal: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """Send a signal that wants an answer; None when no process answered within ``timeout_s``.

        Raises ``SignalsUnavailable`` when Redis is unreachable (at once, while this process's own
        listener knows it is) or no process heard the signal.
        """
        if not self._listening:
            raise SignalsUnavailable("Redis, which carries the answer to the process running the run, is unreachable.")
        reply = f"{self._reply_prefix}{uuid.uuid4().hex}"
        sent = {**signal, "reply": reply, "act_before": time.time() + max(timeout_s - ASK_GRACE_S, timeout_s / 2)}
        try:
            async with asyncio.timeout(timeout_s + ASK_MARGIN_S):
                heard = await self.redis.publish(self.signal_channel, orjson.dumps(sent))
                if not heard:
                    raise SignalsUnavailable("No process is listening for signals; the answer was not delivered.")
                popped = await self.redis.blpop([reply], timeout=timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            raise SignalsUnavailable(
                "Redis, which carries the answer to the process running the run, did not answer."
            ) from exc
        if popped is None:
            return None
        answer: dict[str, Any] = orjson.loads(popped[1])
        return answer


async def _close(pubsub: PubSub) -> None:
    """Close a subscription whose connection may already be gone (redis-py leaves ``aclose`` untyped)."""
    closing: Any = pubsub
    with contextlib.suppress(Exception):
        await closing.aclose()
