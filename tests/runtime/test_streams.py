"""Replay then follow, through a real app: a slow watcher re-attaches from storage without a gap."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.core.envelope import Envelope
from app.runtime.streams import StreamLagged, follow
from tests.conftest import Backend, serve_app, services_of
from tests.fixtures.specs import run_body, team


async def test_a_watcher_that_falls_behind_is_told_and_catches_up_from_storage(
    backend: Backend, tmp_path: Path
) -> None:
    async with serve_app(backend.settings(tmp_path, watcher_buffer=16)) as (app, client):
        services = services_of(app)
        r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t300-d1", max_messages=3)))
        run_id = r.json()["id"]
        seqs: list[int] = []
        lagged = 0
        async for item in follow(services.read_sessionmaker, services.bus, run_id, 0):
            if isinstance(item, StreamLagged):
                lagged += 1
                assert item.last_seq == seqs[-1]
                continue
            assert isinstance(item, Envelope)
            seqs.append(item.seq)
            if len(seqs) % 10 == 0:
                await asyncio.sleep(0.05)  # a slow reader
        assert lagged >= 1
        assert seqs == list(range(1, len(seqs) + 1))
        final = (await client.get(f"/v1/runs/{run_id}")).json()
        assert final["status"] == "succeeded"
        assert seqs[-1] == final["last_seq"]


async def test_follow_attaching_at_any_point_gets_the_exact_tail(backend: Backend, tmp_path: Path) -> None:
    async with serve_app(backend.settings(tmp_path)) as (app, client):
        services = services_of(app)
        r = await client.post("/v1/runs", json=run_body(team=team(model="fake/t60-d1", max_messages=3)))
        run_id = r.json()["id"]

        async def tail(after: int, delay: float) -> list[int]:
            await asyncio.sleep(delay)
            return [
                e.seq
                async for e in follow(services.read_sessionmaker, services.bus, run_id, after)
                if isinstance(e, Envelope)
            ]

        tails = await asyncio.gather(*(tail(after, i * 0.02) for i, after in enumerate([0, 5, 20, 40, 90])))
        last = tails[0][-1]
        for after, got in zip([0, 5, 20, 40, 90], tails, strict=True):
            assert got == list(range(after + 1, last + 1))
