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
"""

from __future__ import annotations

from typing import Any

from app.core.db import utcnow
from app.core.envelope import DELTA, Envelope
from app.core.metrics import Metrics
from app.core.vocabulary import EventType
from app.runtime.bus import EventBus
from app.runtime.recorder import Change, EventRecorder, StorageError, Superseded


class Journal:
    __slots__ = ("_bus", "_metrics", "_recorder", "run_id", "seq")

    def __init__(self, run_id: str, bus: EventBus, recorder: EventRecorder, metrics: Metrics) -> None:
        self.run_id = run_id
        self.seq = 0  # the run's last event (set from storage before the first new one)
        self._bus = bus
        self._recorder = recorder
        self._metrics = metrics

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
            if env.terminal:
                self._bus.publish(env)
            else:
                self.seq = env.seq - 1
            raise
        self._published(env)
        if then is not None:
            self._published(then)

    async def append(self, type_: EventType, data: dict[str, Any], change: Change | None = None) -> Envelope:
        """Number, store and publish one event whose change does not depend on its seq."""
        env = self.envelope(type_, data)
        await self.commit(env, change)
        return env

    def stream(self, type_: EventType, data: dict[str, Any]) -> None:
        """A streamed event (``message.delta``, ``reasoning.delta``): published now, stored in a batch."""
        self.seq += 1
        env = Envelope(self.run_id, self.seq, type_, utcnow(), data)
        self._bus.publish(env)
        self._recorder.record(env)
        if type_ == DELTA:
            self._metrics.deltas.inc()
        else:
            self._metrics.events.labels(type=type_).inc()

    def write(self, change: Change) -> None:
        """Rows that belong to no event (a model call's record), written with the next batch."""
        self._recorder.write(change)

    def _published(self, env: Envelope) -> None:
        self._bus.publish(env)
        self._metrics.events.labels(type=env.type).inc()
