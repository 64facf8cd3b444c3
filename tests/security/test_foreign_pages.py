"""The attacks of issue 25, made by a real browser: a web page of another site against an open server.

Headless Chromium resolves ``evil.example`` and ``attacker.example`` to 127.0.0.1, and its own
protections against public pages reaching loopback are turned off, so that what stops each
attack here is the server. Each attack runs twice, from the attacker's page and, as the control
that shows it would work, from the server's own page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from tests.conftest import LiveServer, make_settings
from tests.fixtures.browser import CHROMIUM, HEADLESS, MISSING
from tests.fixtures.specs import run_body, team

if not CHROMIUM.exists():
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    *HEADLESS,
    "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP attacker.example 127.0.0.1",
    # the browser's own (newer, not universal) guards for loopback: off, to test the server's
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
    "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests",
]

# Opens the server's socket and starts a run over it: whether the socket opened.
DRIVE = """async (server) => new Promise((resolve) => {
  const socket = new WebSocket(server.replace("http://", "ws://") + "/v1/ws");
  socket.onopen = () => {
    socket.send(JSON.stringify({type: "run.start", id: "1", team_id: "demo", task: "Spend the budget."}));
    socket.onmessage = (message) => { if (JSON.parse(message.data).type === "ack") resolve(true); };
  };
  socket.onclose = () => resolve(false);
})"""

# What a rebound page reads, same-origin as far as the browser knows.
READ = """async () => {
  const r = await fetch("/v1/conversations");
  return [r.status, await r.text()];
}"""

ATTACK_PAGE = "<!doctype html><title>A page of another site</title><p>Nothing to see here.</p>"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path)) as live:
        yield live


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def attacker_page(browser: Browser, url: str) -> Page:
    """A tab on ``url``, whose document the attacker serves (every other request goes to the network)."""
    page = await browser.new_page()

    async def serve(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=ATTACK_PAGE)

    await page.route(url, serve)
    await page.goto(url)
    return page


async def runs(server: LiveServer) -> list[dict[str, Any]]:
    async with server.client() as client:
        listed: list[dict[str, Any]] = (await client.get("/v1/runs")).json()["data"]
        return listed


async def test_a_page_of_another_site_cannot_start_runs(server: LiveServer, browser: Browser) -> None:
    evil = await attacker_page(browser, "http://evil.example/")
    assert await evil.evaluate(DRIVE, server.url) is False
    assert await runs(server) == []

    own = await browser.new_page()
    await own.goto(server.url + "/")
    assert await own.evaluate(DRIVE, server.url) is True
    assert len(await runs(server)) == 1  # the attack would have worked


async def test_dns_rebinding_reads_no_conversation(server: LiveServer, browser: Browser) -> None:
    async with server.client() as client:
        run = (await client.post("/v1/runs/wait", json=run_body(team=team(model="fake/t3")))).json()
    conversation = run["conversation_id"]

    rebound = await attacker_page(browser, f"http://attacker.example:{server.port}/")
    status, text = await rebound.evaluate(READ)
    assert status == 400 and '"code":"invalid_host"' in text and conversation not in text

    own = await browser.new_page()
    await own.goto(server.url + "/")
    status, text = await own.evaluate(READ)
    assert status == 200 and conversation in text
