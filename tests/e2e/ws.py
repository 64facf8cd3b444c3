"""A small WebSocket client for the tests, on the `websockets` library."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import websockets


class WsClient:
    def __init__(self, base_url: str) -> None:
        self.url = base_url.replace("http://", "ws://") + "/v1/ws"
        self.frames: list[dict[str, Any]] = []

    async def __aenter__(self) -> WsClient:
        self.ws = await websockets.connect(self.url, max_size=2**24)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return dict(frame)

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[dict[str, Any]]:
        """Frames received up to and including the first one for which ``done`` is true."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv()
                got.append(frame)
                if done(frame):
                    return got

    async def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        """The first frame received so far that matches, or the next one that does.

        For frames a run sends on its own: they may arrive while ``reply_to`` waits for an ack
        (a fast run can finish before the ack of the frame that set it going), and ``until``
        only looks at frames that have not arrived yet.
        """
        for frame in self.frames:
            if match(frame):
                return frame
        return (await self.until(match, timeout))[-1]

    async def reply_to(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with an id and return the ack/error/pong that answers it (other frames are kept)."""
        await self.send(frame)
        frames = await self.until(lambda f: f.get("type") in ("ack", "error", "pong") and f.get("id") == frame["id"])
        return frames[-1]


def events_of(frames: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("run_id") == run_id and "seq" in f]
