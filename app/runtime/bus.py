"""The in-process event bus: fans each run's events out to its watchers.

Each watcher has a bounded buffer. Publishing never waits: a watcher whose
buffer is full is cut loose (``lagged``) and must re-attach from storage,
so a slow watcher never slows the run or the other watchers.

The bus also holds a run's events that the recorder has not yet written
(``pending``). Every published event is therefore in the database or in
``pending`` (or both), which is what lets a watcher attach at any moment
without a gap: see ``app.runtime.streams``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from app.core.envelope import Envelope


class Subscription:
    __slots__ = ("_channel", "_items", "_maxsize", "_wakeup", "closed", "lagged", "moved")

    def __init__(self, channel: RunChannel, maxsize: int) -> None:
        self._channel = channel
        self._items: deque[Envelope] = deque()
        self._maxsize = maxsize
        self._wakeup = asyncio.Event()
        self.lagged = False
        self.moved = False  # the run left this process (it parked): read on from storage, unannounced
        self.closed = False

    def push(self, env: Envelope) -> None:
        if len(self._items) >= self._maxsize:
            self.lagged = True
            self._items.clear()
            self._channel.subscribers.discard(self)
        else:
            self._items.append(env)
        self._wakeup.set()

    async def next_batch(self) -> list[Envelope]:
        """Everything queued so far; waits for at least one event unless lagged or closed."""
        while not self._items and not self.lagged and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch = list(self._items)
        self._items.clear()
        return batch

    def close(self) -> None:
        self.closed = True
        self._channel.subscribers.discard(self)
        self._wakeup.set()


class RunChannel:
    __slots__ = ("done", "exact", "flushed_seq", "on_flushed", "pending", "run_id", "subscribers", "terminal")

    def __init__(self, run_id: str, flushed_seq: int, exact: bool = False) -> None:
        self.run_id = run_id
        self.pending: deque[Envelope] = deque()
        self.subscribers: set[Subscription] = set()
        self.flushed_seq = flushed_seq
        self.exact = exact  # flushed_seq is where the stored log ends, not a lower bound of it
        self.terminal: Envelope | None = None
        self.done = asyncio.Event()
        self.on_flushed: Callable[[], None] | None = None  # the run's journal, holding events back


class EventBus:
    def __init__(self, watcher_buffer: int) -> None:
        self._channels: dict[str, RunChannel] = {}
        self._watcher_buffer = watcher_buffer
        self.draining = False
        self.drained = asyncio.Event()  # set with ``draining``, for watchers that follow from elsewhere
        # distributed mode: every published event also goes to the run's Redis stream
        self.mirror: Callable[[Envelope], None] | None = None
        # watchers of runs not live here (parked): woken when the run opens here, or changes in storage
        self._idle: dict[str, set[asyncio.Event]] = {}

    def drain(self) -> None:
        """The server is stopping: end every live subscription (watchers are told and resume elsewhere)."""
        self.draining = True
        self.drained.set()
        for channel in self._channels.values():
            for sub in tuple(channel.subscribers):
                sub.close()

    def open(self, run_id: str, flushed_seq: int, *, exact: bool = False) -> RunChannel:
        """The channel of a run that starts executing here. ``exact``: ``flushed_seq`` is the end of the
        run's stored log (this process wrote or read it), not only a lower bound of it."""
        channel = self._channels.get(run_id)
        if channel is None:
            channel = self._channels[run_id] = RunChannel(run_id, flushed_seq, exact)
            self.notify(run_id)
        return channel

    def notify(self, run_id: str) -> None:
        """Wake the watchers of a run that is not live here: it opened here, or its stored log changed
        (a parked run settled by this process)."""
        for idle in self._idle.pop(run_id, ()):
            idle.set()

    def idle(self, run_id: str) -> asyncio.Event:
        """A watcher's own event that ``notify(run_id)`` sets: taken before it looks at a run that is not
        live here, so a change while it looks is not missed; given back with ``forget_idle``."""
        idle = asyncio.Event()
        self._idle.setdefault(run_id, set()).add(idle)
        return idle

    def forget_idle(self, run_id: str, idle: asyncio.Event) -> None:
        waiting = self._idle.get(run_id)
        if waiting is not None:
            waiting.discard(idle)
            if not waiting:
                del self._idle[run_id]

    def is_open(self, run_id: str) -> bool:
        return run_id in self._channels

    def on_flushed(self, run_id: str, callback: Callable[[], None]) -> bool:
        """Call ``callback`` each time more of a run live here is stored; False when none is live here."""
        channel = self._channels.get(run_id)
        if channel is None:
            return False
        channel.on_flushed = callback
        return True

    def flushed_seq(self, run_id: str) -> int:
        """The last seq the recorder has stored of a run live here (-1 when none is: ask the database)."""
        channel = self._channels.get(run_id)
        return channel.flushed_seq if channel is not None else -1

    def stored_end(self, run_id: str) -> int | None:
        """The end of the stored log of a run live here, when the channel knows it exactly (else None)."""
        channel = self._channels.get(run_id)
        return channel.flushed_seq if channel is not None and channel.exact else None

    def publish(self, env: Envelope) -> None:
        if self.mirror is not None:
            self.mirror(env)
        channel = self._channels.get(env.run_id)
        if channel is None:
            return
        if env.seq > channel.flushed_seq:
            channel.pending.append(env)
        for sub in tuple(channel.subscribers):
            sub.push(env)
        if env.terminal:
            channel.terminal = env
            channel.done.set()
            self._maybe_close(channel)

    def mark_flushed(self, run_id: str, seq: int) -> None:
        channel = self._channels.get(run_id)
        if channel is None or seq <= channel.flushed_seq:
            return
        channel.flushed_seq = seq
        pending = channel.pending
        while pending and pending[0].seq <= seq:
            pending.popleft()
        if channel.on_flushed is not None:
            channel.on_flushed()
        self._maybe_close(channel)

    def detach(self, run_id: str, *, quiet: bool = False) -> None:
        """The run is no longer this process's: its watchers re-attach (from storage) and the channel goes.

        ``quiet``: nothing went missing (the run parked with everything stored), so a watcher is not
        told it lagged: its stream goes on as one."""
        channel = self._channels.pop(run_id, None)
        if channel is None:
            return
        for sub in tuple(channel.subscribers):
            if quiet:
                sub.moved = True
            else:
                sub.lagged = True
            sub.close()
        channel.done.set()

    def _maybe_close(self, channel: RunChannel) -> None:
        # once the terminal event is stored, the database alone can serve every replay
        if channel.terminal is not None and channel.flushed_seq >= channel.terminal.seq:
            self._channels.pop(channel.run_id, None)

    def subscribe(self, run_id: str) -> tuple[Subscription | None, list[Envelope]]:
        """A live subscription (None when no run is live here) and the not-yet-stored events."""
        channel = self._channels.get(run_id)
        if channel is None:
            return None, []
        sub = Subscription(channel, self._watcher_buffer)
        if self.draining:
            sub.closed = True
        channel.subscribers.add(sub)
        return sub, list(channel.pending)

    async def wait_terminal(self, run_id: str) -> bool:
        """Until the run live here has ended: True when its terminal event came (or it is not live here),
        False when the channel was detached without it (the run left this process)."""
        channel = self._channels.get(run_id)
        if channel is None:
            return True
        await channel.done.wait()
        return channel.terminal is not None

    def live_watchers(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())
