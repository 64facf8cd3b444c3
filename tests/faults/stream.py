"""A strict SSE reader for the fault tests, parsed from the raw bytes.

``tests/e2e/sse.py`` reads through httpx-sse, whose decoder (0.4.3) dispatches an empty event for the
blank line after a ``: ping`` comment once any event had an id; long streams here see pings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Each SSE frame as a dict of its fields; ``: ping`` comments are skipped."""
    assert response.status_code == 200, response.status_code
    assert response.headers["content-type"].startswith("text/event-stream")
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while b"\r\n\r\n" in buffer:
            frame, buffer = buffer.split(b"\r\n\r\n", 1)
            fields: dict[str, str] = {}
            for line in frame.decode().split("\r\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                fields[name] = value
            if fields:
                yield fields


async def read_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Run events as envelopes (id and event checked against them); stream notices as ``{"type": ...}``."""
    async for frame in sse_frames(response):
        data = json.loads(frame["data"])
        if "id" not in frame:
            yield {"type": frame["event"], **data}
            continue
        assert int(frame["id"]) == data["seq"] and frame["event"] == data["type"], frame
        yield data


async def collect(client: httpx.AsyncClient, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    async with client.stream("GET", url, **kwargs) as response:
        return [e async for e in read_events(response)]
