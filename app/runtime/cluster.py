"""The distributed mode's moving parts in one process: Redis, the run streams, signals, and the dispatcher.

``Cluster`` is built by the lifespan when ``SWARM_REDIS_URL`` is set. Its
dispatcher, in a process that executes runs (a worker, or an API replica
with ``SWARM_EXECUTE_RUNS``), claims queued runs up to the per-process
concurrency, renews their leases, and acts on cancel and input signals for
them. Every process (API-only replicas too) sweeps lapsed leases, so runs of
a lost worker end even when no other worker is left.

Stop order: stop claiming, let the run manager drain its runs (leases are
still renewed and signals still answered meanwhile), then stop the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.errors import AppError
from app.core.settings import Settings
from app.runtime.manager import RunManager
from app.runtime.queue import RunQueue
from app.runtime.redis_bus import RedisStreams
from app.runtime.signals import Signals

log = structlog.get_logger(__name__)

CLAIM_BATCH = 20
SIGNAL_REPLY_TIMEOUT_S = 5.0


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Cluster:
    def __init__(
        self, settings: Settings, redis: Redis, streams: RedisStreams, queue: RunQueue, *, execute: bool
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.streams = streams
        self.queue = queue
        self.signals = Signals(redis, settings.redis_prefix)
        self.worker_id = queue.worker_id
        self.execute = execute
        self._manager: RunManager | None = None
        self._wakeup = asyncio.Event()
        self._claiming = False
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def build(cls, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], *, execute: bool) -> Cluster:
        assert settings.redis_url is not None
        redis = Redis.from_url(settings.redis_url, health_check_interval=30)
        streams = RedisStreams(redis, settings.redis_prefix, settings.stream_retention_s)
        queue = RunQueue(sessionmaker, streams, new_worker_id(), settings.lease_s)
        return cls(settings, redis, streams, queue, execute=execute)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, manager: RunManager) -> None:
        self._manager = manager
        self.streams.start()
        manager.on_finished = self._on_run_finished
        await self.signals.start(self._on_signal, self.poke)
        self._spawn(self._sweep_loop, "run-sweeper")
        if self.execute:
            self._claiming = True
            self._spawn(self._claim_loop, "run-claimer")
            self._spawn(self._heartbeat_loop, "run-heartbeat")
        log.info("cluster_started", worker_id=self.worker_id, executes_runs=self.execute)

    def _spawn(self, loop: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._tasks.append(asyncio.create_task(loop(), name=name))

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wakeup.set()

    async def stop(self) -> None:
        self._claiming = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.signals.stop()
        await self.streams.stop()
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False

    # -- claiming --------------------------------------------------------------------------------

    def poke(self) -> None:
        """A run may be claimable: look now, not at the next poll."""
        self._wakeup.set()

    async def announce(self) -> None:
        """A run was queued: this process claims it if it can, otherwise every executor is told."""
        manager = self._manager
        if self._claiming and manager is not None and manager.live_count < self.settings.worker_concurrency:
            self.poke()
        else:
            await self.signals.wake()

    def _on_run_finished(self, run_id: str) -> None:
        # its conversation's turn is free: the next queued run there may start, here or elsewhere
        self.poke()
        task = asyncio.create_task(self.signals.wake())
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _claim_loop(self) -> None:
        assert self._manager is not None
        manager = self._manager
        while self._claiming:
            self._wakeup.clear()
            free = self.settings.worker_concurrency - manager.live_count
            claimed = 0
            if free > 0:
                try:
                    runs = await self.queue.claim(min(free, CLAIM_BATCH))
                except Exception as exc:
                    log.warning("claim_failed", error=f"{type(exc).__name__}: {exc}")
                    runs = []
                for run in runs:
                    if not self._claiming:
                        break  # the claim is released by the lease: the sweeper requeues or ends it
                    # a first attempt has only its run.queued (seq 1), in the database and nowhere else
                    manager.submit(run, flushed_seq=0, known_seq=1 if run.attempts == 1 else None)
                claimed = len(runs)
            if claimed and claimed == min(free, CLAIM_BATCH):
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.sweep_interval_s):
                    await self._wakeup.wait()

    async def _heartbeat_loop(self) -> None:
        assert self._manager is not None
        manager = self._manager
        interval = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            live = manager.live_ids()
            if not live:
                continue
            try:
                held = await self.queue.renew(live)
            except Exception as exc:
                log.warning("lease_renewal_failed", error=f"{type(exc).__name__}: {exc}", runs=len(live))
                continue
            for run_id in live:
                if run_id not in held:
                    if manager.is_live(run_id) and not manager.is_finishing(run_id):
                        # swept while we were away: another process has settled (or restarted) it
                        log.warning("lease_lost", run_id=run_id, worker_id=self.worker_id)
                        manager.cancel(run_id, "worker_lost")
                elif (reason := held[run_id]) is not None:
                    manager.cancel(run_id, reason)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                settled = await self.queue.sweep()
            except Exception as exc:
                log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}")
                settled = []
            if settled:
                # a requeued run is claimable, and a settled one freed its conversation's turn
                await self.signals.wake()
                self.poke()
            await asyncio.sleep(self.settings.sweep_interval_s)

    # -- signals ---------------------------------------------------------------------------------

    async def _on_signal(self, signal: dict[str, Any]) -> dict[str, Any] | None:
        manager = self._manager
        run_id = signal.get("run_id")
        if manager is None or not isinstance(run_id, str) or not manager.is_live(run_id):
            return None  # not ours: the process that runs it answers
        kind = signal.get("kind")
        if kind == "cancel":
            manager.cancel(run_id, str(signal.get("reason") or "cancelled"))
            return {"ok": True}
        if kind == "input":
            try:
                if not manager.provide_input(run_id, str(signal.get("request_id")), str(signal.get("content"))):
                    return None  # it has just parked: its row takes the answer, in the asking process
            except AppError as exc:
                return {"ok": False, "code": exc.code, "detail": exc.detail}
            return {"ok": True}
        return None

    async def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a run wherever it is: True when it was queued and is now cancelled here."""
        if await self.queue.cancel_queued(run_id, reason) is not None:
            return True
        await self.queue.request_cancel(run_id, reason)
        await self.signals.send({"kind": "cancel", "run_id": run_id, "reason": reason})
        return False

    async def provide_input(self, run_id: str, request_id: str, content: str) -> dict[str, Any] | None:
        """Hand an answer to the process running the run: its verdict, or None when none answered."""
        return await self.signals.ask(
            {"kind": "input", "run_id": run_id, "request_id": request_id, "content": content},
            SIGNAL_REPLY_TIMEOUT_S,
        )
