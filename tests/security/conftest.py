"""Helpers for the security tests: keys made the way an operator makes them (the CLI)."""

from __future__ import annotations

import asyncio

import websockets
from typer.testing import CliRunner

from app.cli import cli
from tests.e2e.ws import WsClient


def create_key(database_url: str, principal: str) -> dict[str, str]:
    """``swarmdirector keys create`` for ``principal``; the Authorization header that uses the key."""
    env = {"SWARM_DATABASE_URL": database_url, "SWARM_LOG_LEVEL": "WARNING"}
    result = CliRunner().invoke(cli, ["keys", "create", "--name", principal, "--principal", principal], env=env)
    assert result.exit_code == 0, result.output
    return {"authorization": f"Bearer {result.stdout.strip()}"}


async def create_key_async(database_url: str, principal: str) -> dict[str, str]:
    # the CLI runs its own event loop
    return await asyncio.to_thread(create_key, database_url, principal)


class KeyedWs(WsClient):
    """The tests' WebSocket client, with an Authorization header."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        super().__init__(base_url)
        self.headers = headers

    async def __aenter__(self) -> KeyedWs:
        self.ws = await websockets.connect(self.url, max_size=2**24, additional_headers=self.headers)
        return self
