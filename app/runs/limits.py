"""Admission limits on starting runs: how many a principal may have live, and how fast it may start them.

Both answer ``429`` with ``Retry-After``. The live count is read from the
database (queued, running and awaiting-input runs), so it holds across
restarts and replicas; the start rate is a sliding 60-second window kept in
this process (with N replicas a principal may start up to N times as many).
Checked under the run launcher's admission lock, so two requests cannot both
take the last slot. In the embedded mode a new conversation's rows are written
after the lock; its start counts as pending until its run is live.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.core.settings import Settings
from app.runs.repository import ParkedRepository, RunRepository

WINDOW_S = 60.0
LIVE_RETRY_AFTER_S = 5  # a hint: when a live run ends is not known in advance


class TooManyRequests(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, code: str, retry_after_s: int) -> None:
        super().__init__(detail, code=code, headers={"Retry-After": str(max(1, retry_after_s))})
        self.retry_after_s = max(1, retry_after_s)


class RunLimits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._starts: dict[str, deque[float]] = {}

    def _window(self, principal_id: str) -> deque[float]:
        now = self._clock()
        starts = self._starts.get(principal_id)
        if starts is None:
            starts = self._starts[principal_id] = deque()
        while starts and now - starts[0] >= WINDOW_S:
            starts.popleft()
        return starts

    def check_rate(self, principal_id: str, per_minute: int) -> None:
        starts = self._window(principal_id)
        if len(starts) >= per_minute:
            wait = WINDOW_S - (self._clock() - starts[-per_minute])
            raise TooManyRequests(
                f"At most {per_minute} runs may be started per minute.",
                code="rate_limited",
                retry_after_s=math.ceil(wait),
            )
        if not starts:
            # keep the map to principals that started something in the last minute
            self._starts.pop(principal_id, None)

    def record_start(self, principal_id: str) -> None:
        self._window(principal_id).append(self._clock())

    def forget_start(self, principal_id: str) -> None:
        """Take back the latest start recorded for ``principal_id`` (its rows could not be written)."""
        starts = self._starts.get(principal_id)
        if starts:
            starts.pop()

    async def check_start(
        self,
        session: AsyncSession,
        principal_id: str,
        settings: Settings,
        *,
        live: int | None = None,
        parked: int | None = None,
    ) -> None:
        """Raise ``TooManyRequests`` when ``principal_id`` may not start a run now.

        ``live``: the principal's live runs when the caller knows them (the embedded mode's run
        manager holds every live run, and the starts it admitted whose rows are still being written);
        else they are counted in the database. ``parked``: the principal's parked runs, likewise.
        """
        self.check_rate(principal_id, settings.max_runs_per_minute)
        if live is None:
            live = await RunRepository(session).count_live(principal_id)
        limit = settings.max_live_runs_per_principal
        if live >= limit:
            raise TooManyRequests(
                f"At most {limit} runs may be live (queued, running or awaiting input) at once; "
                "wait for one to finish or cancel one.",
                code="too_many_live_runs",
                retry_after_s=LIVE_RETRY_AFTER_S,
            )
        parked_limit = settings.max_parked_runs_per_principal
        if parked is None:
            parked = await ParkedRepository(session).count_for(principal_id)
        if parked >= parked_limit:
            raise TooManyRequests(
                f"At most {parked_limit} runs may wait for a person at once; answer or cancel one.",
                code="too_many_parked_runs",
                retry_after_s=LIVE_RETRY_AFTER_S,
            )
