"""A run's event log as it is written: numbered, durable events committed then published, deltas
published then recorded.

Every event of a run is numbered and written here, from its consumer loop, in stream order:
AutoGen's runtime runs ahead of the stream, so an event written from inside an agent call would
overtake events still queued in the stream. The API is three calls:

- ``envelope(type, data)`` numbers an event (what it changes may need its seq and time);
- ``await commit(env, change, then=follower)`` stores it (and what it changes, and the event that
  follows in the same transaction) and then publishes it: a watcher never sees an event that is not
  stored;
- ``stream(type, data)`` publishes a delta at once and leaves its row to the recorder's next batch
  (the per-token path: no await).

Publication never runs more than ``UNSTORED_MAX`` seqs ahead of what is stored of the run. A delta
beyond that bound (the database far behind) is held back, in order, and published as soon as the
recorder has stored enough (``EventBus.on_flushed``); it is not dropped. So if the process dies, every
seq a watcher was sent is at most ``UNSTORED_MAX`` past the stored log, and the run's end, written by
whoever settles it (``app/runtime/lost.py``), is numbered beyond all of them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from app.core.db import utcnow
from app.core.envelope import DELTA, UNSTORED_MAX, Envelope
from app.core.metrics import Metrics
from app.core.vocabulary import EventType
from app.runtime.bus import EventBus
from app.runtime.recorder import Change, EventRecorder, StorageError, Superseded

HALF = UNSTORED_MAX // 2
RECHECK = 256  # while more than HALF ahead: how often the bound is looked at again (and a write asked for)


class Journal:
    __slots__ = ("_bus", "_check", "_floor", "_held", "_metrics", "_recorder", "run_id", "seq")

    def __init__(self, run_id: str, bus: EventBus, recorder: EventRecorder, metrics: Metrics) -> None:
        self.run_id = run_id
        self.seq = 0  # the run's last event (set from storage before the first new one: ``resume``)
        self._floor = 0  # the last seq known to be stored when the run was handed over
        self._check = HALF  # the seq past which the bound is looked at (the per-token path: one compare)
        self._held: deque[Envelope] = deque()  # streamed events past the bound, waiting for storage
        self._bus = bus
        self._recorder = recorder
        self._metrics = metrics

    def resume(self, seq: int, *, stored: int) -> None:
        """Continue after ``seq``, the run's last event anywhere; ``stored``: its last stored one."""
        self.seq = seq
        self._floor = stored
        self._check = stored + HALF

    def envelope(self, type_: EventType, data: dict[str, Any]) -> Envelope:
        """The run's next event, numbered (not yet stored nor published)."""
        self.seq += 1
        return Envelope(self.run_id, self.seq, type_, utcnow(), data)

    async def commit(self, env: Envelope, change: Change | None = None, *, then: Envelope | None = None) -> None:
        """Store ``env`` with what it changes, then publish it (and ``then``, the event numbered right
        after it, stored in the same transaction: ``change`` then holds the rows of both).

        A terminal event is published even when it cannot be stored, so watchers learn how the run
        ended; the run's row is then settled by the next start's recovery. Any other event that could
        not be stored was never published either: the next event takes its seq, leaving no gap.
        """
        try:
            await self._recorder.commit(env, change, then=then)
        except Superseded:
            # another process settled the run (our lease lapsed): its events stand; our watchers
            # re-attach and read them from storage
            self._bus.detach(self.run_id)
            raise
        except StorageError:
            if not env.terminal:
                self.seq = env.seq - 1
            elif env.seq <= self._limit():
                self._release(env.seq)
                self._bus.publish(env)
            else:
                # past the bound: a watcher must not see it (a restart would number the run's end at
                # or before it); they read on from storage, where the run's end lands later
                self._bus.detach(self.run_id)
            raise
        if self._held:
            self._release(env.seq)  # what came before it is stored with it
        self._published(env)
        if then is not None:
            self._published(then)

    async def append(self, type_: EventType, data: dict[str, Any], change: Change | None = None) -> Envelope:
        """Number, store and publish one event whose change does not depend on its seq."""
        env = self.envelope(type_, data)
        await self.commit(env, change)
        return env

    def stream(self, type_: EventType, data: dict[str, Any]) -> None:
        """A streamed event (``message.delta``, ``reasoning.delta``): published now (or, past the bound,
        once enough is stored), stored in a batch."""
        self.seq += 1
        env = Envelope(self.run_id, self.seq, type_, utcnow(), data)
        self._recorder.record(env)
        if self._held or (self.seq > self._check and self.seq > self._room()):
            self._held.append(env)
        else:
            self._bus.publish(env)
        if type_ == DELTA:
            self._metrics.deltas.inc()
        else:
            self._metrics.events.labels(type=type_).inc()

    def write(self, change: Change) -> None:
        """Rows that belong to no event (a model call's record), written with the next batch."""
        self._recorder.write(change, self.run_id)

    def _limit(self) -> int:
        """The last seq that may be published now."""
        return max(self._bus.flushed_seq(self.run_id), self._floor) + UNSTORED_MAX

    def _room(self) -> int:
        """Past half the bound: ask for a write now, and look again soon; the last seq publishable now."""
        limit = self._limit()
        if self.seq > limit - HALF:
            self._recorder.flush_soon()
            self._check = min(self.seq + RECHECK, limit)
            if self.seq > limit:
                self._bus.on_flushed(self.run_id, self._on_flushed)
        else:
            self._check = limit - HALF
        return limit

    def _on_flushed(self) -> None:
        if self._held:
            self._release(self._limit())
            self._check = 0  # the next streamed event looks at the bound again

    def _release(self, upto: int) -> None:
        """Publish the held events up to seq ``upto`` (stored, or within the bound), in order."""
        held, publish = self._held, self._bus.publish
        while held and held[0].seq <= upto:
            publish(held.popleft())

    def _published(self, env: Envelope) -> None:
        self._bus.publish(env)
        self._metrics.events.labels(type=env.type).inc()
