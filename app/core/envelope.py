"""The one event envelope, used on SSE, WebSocket and in the stored log.

Serialised once, when first asked, however many watchers receive it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from app.core.vocabulary import DELTA, REASONING_DELTA, STREAMED_TYPES, TERMINAL_TYPES, EventType

__all__ = [
    "DELTA",
    "REASONING_DELTA",
    "STREAMED_TYPES",
    "TERMINAL_TYPES",
    "UNSTORED_MAX",
    "Envelope",
    "format_at",
    "parse_at",
    "usage_data",
]


# The most seqs a run's published events may run ahead of its stored log (``Journal.stream`` holds a
# delta back beyond it). Whoever ends a run whose executor is gone numbers its terminal event past
# the stored log plus this bound (``app/runtime/lost.py``), so a seq a watcher saw live never names
# another event. It must never shrink from one version to the next.
UNSTORED_MAX = 8192


def format_at(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def usage_data(
    prompt_tokens: int,
    completion_tokens: int,
    estimated: bool = False,
    by_model: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """The ``usage`` of a terminal event: as the run's own (``GET /v1/runs/{id}``), and, when known,
    per model (``provider/model`` to its prompt and completion tokens)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "estimated": estimated,
    }
    if by_model:
        usage["by_model"] = [
            {"model": model, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
            for model, (p, c) in sorted(by_model.items())
        ]
    return usage


def parse_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Envelope:
    __slots__ = ("_json", "_sse", "at", "data", "run_id", "seq", "type")

    def __init__(self, run_id: str, seq: int, type: EventType, at: datetime, data: dict[str, Any]) -> None:
        self.run_id = run_id
        self.seq = seq
        self.type = type
        self.at = at
        self.data = data
        self._json: str | None = None
        self._sse: bytes | None = None

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        """An envelope read back from its JSON (Redis), keeping that JSON so it is never encoded again."""
        d = orjson.loads(raw)
        env = cls(d["run_id"], d["seq"], d["type"], parse_at(d["at"]), d["data"])
        env._json = raw if isinstance(raw, str) else raw.decode()
        return env

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def durable(self) -> bool:
        return self.type not in STREAMED_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "type": self.type,
            "at": format_at(self.at),
            "data": self.data,
        }

    def json(self) -> str:
        if self._json is None:
            self._json = orjson.dumps(self.to_dict()).decode()
        return self._json

    def sse(self) -> bytes:
        """The event as one SSE frame (``id``, ``event``, ``data``), encoded once for every watcher."""
        if self._sse is None:
            self._sse = f"id: {self.seq}\r\nevent: {self.type}\r\ndata: {self.json()}\r\n\r\n".encode()
        return self._sse

    def __repr__(self) -> str:
        return f"Envelope({self.run_id!r}, {self.seq}, {self.type!r})"
