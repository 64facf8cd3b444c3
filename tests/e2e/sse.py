"""A small SSE reader for the tests: envelopes as dicts, with the frame's id and event checked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import EventSource


async def read_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    async for sse in EventSource(response).aiter_sse():
        if not sse.data:
            continue  # a `: ping` keep-alive comment (httpx-sse reports it once an id has been seen)
        if sse.event in ("stream.lagged", "stream.closing"):
            yield {"type": sse.event, **json.loads(sse.data)}
            continue
        envelope = json.loads(sse.data)
        assert sse.id == str(envelope["seq"]), "the SSE id is the event's seq"
        assert sse.event == envelope["type"], "the SSE event name is the event's type"
        yield envelope


async def collect(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    async with client.stream(method, url, **kwargs) as response:
        return [e async for e in read_events(response)]
