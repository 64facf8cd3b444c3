"""The built-in chat page at `/`, driven in a real (headless) Chromium against a real uvicorn.

Each test saves a full-page screenshot of its steps under `artifacts/chat/`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.conftest import LiveServer, make_settings
from tests.fixtures.browser import CHROMIUM, HEADLESS, MISSING
from tests.fixtures.process import free_port, spawn_serve, wait_until_up
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, team

if not CHROMIUM.exists():
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    *HEADLESS,
    "--disable-quic",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "chat"
BUBBLE = "[data-testid=bubble]"
AGENT_BUBBLE = "[data-testid=bubble][data-kind=agent]"

# runs take their time on a busy machine: a bound, not a timing assumption
expect.set_options(timeout=20_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


class ChatPage:
    """One browser tab on the chat page, with the page's own errors collected."""

    def __init__(self, page: Page, server: LiveServer, name: str) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"console {message.type}: {message.text}")

    async def open(self, path: str = "/") -> None:
        await self.page.goto(self.server.url + path)
        await expect(self.page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await expect(self.page.get_by_label("Team")).not_to_have_value("")

    async def shot(self, step: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{self.name}-{step}.png"), full_page=True)

    async def pick_team(self, name: str) -> None:
        await self.page.get_by_label("Team").select_option(label=name)

    async def send_task(self, task: str) -> None:
        box = self.page.get_by_label("Task", exact=True)
        await box.fill(task)
        await box.press("Enter")

    async def expect_status(self, status: str) -> None:
        await expect(self.page.get_by_test_id("run-status")).to_have_attribute("data-status", status)

    async def wait_streaming_growth(self, agent: str | None = None) -> dict[str, Any]:
        """Until a bubble (of `agent`), still streaming, is seen longer than at an earlier poll; the page then."""
        handle = await self.page.wait_for_function(
            """(agent) => {
                const seen = (window.__grown ??= {});
                const streaming = document.querySelectorAll('[data-testid=bubble][data-state=streaming]');
                for (const b of [...streaming].filter((b) => !agent || b.dataset.agent === agent)) {
                    const length = b.querySelector('[data-testid=bubble-text]').textContent.length;
                    const before = seen[b.dataset.messageId];
                    seen[b.dataset.messageId] = length;
                    if (before > 0 && length > before) {
                        return {
                            status: document.querySelector('[data-testid=run-status]').dataset.status,
                            sendDisabled: document.getElementById('send').disabled,
                            cancelShown: !document.getElementById('cancel').hidden,
                        };
                    }
                }
                return false;
            }""",
            arg=agent,
            polling=30,
        )
        snapshot: dict[str, Any] = await handle.json_value()
        return snapshot

    async def bubbles(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.page.eval_on_selector_all(
            BUBBLE,
            """(nodes) => nodes.map((b) => ({
                id: b.dataset.messageId ?? null,
                agent: b.dataset.agent,
                state: b.dataset.state,
                text: b.querySelector('[data-testid=bubble-text]').textContent,
            }))""",
        )
        return result

    async def conversation_id(self) -> str:
        value = await self.page.evaluate("window.__swarm.conversationId")
        assert isinstance(value, str)
        return value

    async def assert_bubbles_match(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Every bubble is one stored message, in order, with its exact text: nothing missing or doubled."""
        conversation_id = await self.conversation_id()
        stored = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()["data"]
        shown = await self.bubbles()
        assert [b["id"] for b in shown] == [m["id"] for m in stored]
        assert [(b["agent"], b["text"]) for b in shown] == [(m["agent"], m["text"]) for m in stored]
        assert all(b["state"] == "final" for b in shown)
        assert await self.page.evaluate("window.__swarm.mismatches") == []
        return list(stored)


@pytest.fixture
async def chat(browser: Browser, live_server: LiveServer, request: pytest.FixtureRequest) -> AsyncIterator[ChatPage]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    name = request.node.name.removeprefix("test_")
    page = ChatPage(await context.new_page(), live_server, name)
    try:
        yield page
    finally:
        await context.close()
    assert page.errors == []


async def create_team(client: httpx.AsyncClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/teams", json=spec)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_tokens_stream_into_one_bubble_per_agent(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("duo", model="fake/t40-d20", max_messages=3))
    await chat.open()
    await chat.shot("1-empty")
    await chat.pick_team("duo")
    await chat.send_task("Write a haiku about the sea.")

    user = chat.page.locator("[data-testid=bubble][data-kind=user]")
    await expect(user.get_by_test_id("bubble-text")).to_have_text("Write a haiku about the sea.")
    live = await chat.wait_streaming_growth()
    assert live == {"status": "running", "sendDisabled": True, "cancelShown": True}
    await chat.shot("2-streaming")

    await chat.expect_status("succeeded")
    await expect(chat.page.get_by_test_id("run-summary")).to_have_attribute("data-status", "succeeded")
    await chat.shot("3-done")
    stored = await chat.assert_bubbles_match(live_client)
    agents = [m["agent"] for m in stored]
    assert agents == ["user", "writer", "critic"]

    # one colour per agent, the same in every bubble of that agent
    colours = await chat.page.eval_on_selector_all(
        AGENT_BUBBLE, "(nodes) => nodes.map((b) => [b.dataset.agent, getComputedStyle(b).borderLeftColor])"
    )
    by_agent = {name: colour for name, colour in colours}
    assert len(by_agent) == 2 and len(set(by_agent.values())) == 2
    await expect(chat.page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(chat.page.get_by_role("button", name="Send", exact=True)).to_be_enabled()


async def test_input_request_is_answered_in_place(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    members = [agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}]
    await create_team(live_client, team("asking", members=members, max_messages=4))
    await chat.open()
    await chat.pick_team("asking")
    await chat.send_task("Draft a plan and ask me before going on.")

    form = chat.page.get_by_role("form", name="Input requested by human")
    await expect(form).to_be_visible()
    await chat.expect_status("awaiting_input")
    # the request survives a reload: the page follows the waiting run again and asks again
    await chat.page.reload()
    await expect(form).to_be_visible()
    await expect(form.get_by_test_id("input-prompt")).not_to_be_empty()
    await chat.expect_status("awaiting_input")
    answer = form.get_by_label("Your answer")
    await expect(answer).to_be_focused()
    await answer.fill("Yes, go ahead with step two.")
    await chat.shot("1-asked")
    await form.get_by_role("button", name="Send answer").click()

    await expect(form).to_have_count(0)
    await chat.expect_status("succeeded")
    human = chat.page.locator("[data-testid=bubble][data-agent=human]")
    await expect(human).to_have_count(1)
    await expect(human.get_by_test_id("bubble-text")).to_have_text("Yes, go ahead with step two.")
    await chat.shot("2-answered")
    stored = await chat.assert_bubbles_match(live_client)
    assert [m["agent"] for m in stored] == ["user", "helper", "human", "helper"]


async def test_a_tool_approval_shows_the_call_and_takes_a_decision(
    chat: ChatPage, live_client: httpx.AsyncClient
) -> None:
    script = [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]}]
    clerk = agent("clerk", tools=["calculator"], approve_tools=["calculator"], model_options={"script": script})
    await create_team(live_client, team("approving", members=[clerk, agent("critic", "fake/t3")], max_messages=3))
    await chat.open()
    await chat.pick_team("approving")
    await chat.send_task("What is six times seven?")

    form = chat.page.get_by_role("form", name="Approval requested by clerk")
    await expect(form).to_be_visible()
    await chat.expect_status("awaiting_input")
    await expect(form.get_by_test_id("approval-args")).to_contain_text('"expression": "6*7"')
    await form.get_by_label("Note (a rejection's reason, told to the model)").fill("not today")
    await chat.shot("1-approval")
    await form.get_by_role("button", name="Reject").click()

    await expect(form).to_have_count(0)
    await chat.expect_status("succeeded")
    card = chat.page.locator("[data-testid=tool-call]")
    await expect(card).to_have_attribute("data-state", "error")
    await expect(card).to_contain_text("A person declined this call of the tool 'calculator'")
    await expect(card).to_contain_text("not today")
    await chat.shot("2-declined")
    stored = await chat.assert_bubbles_match(live_client)
    assert [m["type"] for m in stored if m["agent"] == "user"] == ["TextMessage", "ToolApprovalMessage"]


async def test_cancel_stops_a_streaming_run(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("long", model="fake/t2000-d10", max_messages=3))
    await chat.open()
    await chat.pick_team("long")
    await chat.send_task("Write a very long essay.")
    await chat.wait_streaming_growth()
    await chat.shot("1-streaming")

    await chat.page.get_by_role("button", name="Cancel run").click()
    await chat.expect_status("cancelled")
    await expect(chat.page.get_by_test_id("run-summary")).to_have_attribute("data-status", "cancelled")
    await expect(chat.page.locator("[data-testid=bubble][data-state=streaming]")).to_have_count(0)
    await expect(chat.page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    await chat.shot("2-cancelled")

    runs = (await live_client.get("/v1/runs", params={"conversation_id": await chat.conversation_id()})).json()
    assert [r["status"] for r in runs["data"]] == ["cancelled"]


async def test_failed_run_shows_its_error(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("broken", model="fake/fail", max_messages=3))
    await chat.open()
    await chat.pick_team("broken")
    await chat.send_task("This will not work.")
    await chat.expect_status("failed")
    error = chat.page.get_by_test_id("run-error")
    await expect(error).to_contain_text("model_error")
    await chat.shot("1-failed")


async def test_history_lists_conversations_and_continues_one(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("quick", model="fake/t8", max_messages=3))
    older = await live_client.post("/v1/runs/wait", json={"team_id": "quick", "task": "The older conversation."})
    assert older.status_code == 200, older.text
    older_conversation = older.json()["conversation_id"]

    await chat.open()
    await chat.pick_team("quick")
    await chat.send_task("The newer conversation.")
    await chat.expect_status("succeeded")
    newer_conversation = await chat.conversation_id()

    # a reload keeps the conversation on screen, and the history lists both, newest first
    await chat.page.reload()
    items = chat.page.get_by_test_id("history-item")
    await expect(items).to_have_count(2)
    await expect(items.nth(0)).to_contain_text("The newer conversation.")
    await expect(items.nth(1)).to_contain_text("The older conversation.")
    await expect(items.nth(0)).to_have_attribute("aria-current", "true")
    await expect(chat.page.locator(BUBBLE)).to_have_count(3)
    await chat.shot("1-reloaded")

    await items.nth(1).click()
    await expect(chat.page.get_by_role("heading", level=1)).to_have_text("The older conversation.")
    await expect(chat.page.locator(BUBBLE)).to_have_count(3)
    await expect(chat.page).to_have_url(re.compile(f"#conversation={older_conversation}$"))
    assert await chat.conversation_id() == older_conversation
    await chat.assert_bubbles_match(live_client)
    await chat.shot("2-older")

    # the next task continues the loaded conversation
    await chat.send_task("And a follow-up.")
    await chat.expect_status("succeeded")
    await expect(chat.page.get_by_test_id("run-summary")).to_have_count(2)
    stored = await chat.assert_bubbles_match(live_client)
    assert [m["text"] for m in stored if m["agent"] == "user"] == ["The older conversation.", "And a follow-up."]
    assert await chat.conversation_id() == older_conversation
    await chat.shot("3-continued")

    # "New conversation" starts fresh
    await chat.page.get_by_role("button", name="New conversation").click()
    await expect(chat.page.locator(BUBBLE)).to_have_count(0)
    await expect(chat.page.get_by_test_id("empty-state")).to_be_visible()
    await chat.send_task("A third conversation.")
    await chat.expect_status("succeeded")
    assert await chat.conversation_id() not in (older_conversation, newer_conversation)
    await expect(items).to_have_count(3)


async def test_phone_width_has_no_horizontal_scroll(
    browser: Browser, live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    await create_team(live_client, team("quick", model="fake/t8", max_messages=3))
    context = await browser.new_context(
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        color_scheme="dark",  # and the dark palette, while at it
        reduced_motion="reduce",  # the sidebar appears without sliding, for the screenshot
    )
    chat = ChatPage(await context.new_page(), live_server, "phone_width_has_no_horizontal_scroll")
    try:
        await chat.open()
        width = "document.scrollingElement.scrollWidth"
        assert await chat.page.evaluate(width) <= 375
        await expect(chat.page.get_by_role("complementary", name="Conversation history")).to_be_hidden()
        await chat.shot("1-empty")

        await chat.pick_team("quick")
        box = chat.page.get_by_label("Task", exact=True)
        await box.press_sequentially("Line one")
        await box.press("Shift+Enter")  # a new line, not a send
        await box.press_sequentially("line two")
        assert await box.input_value() == "Line one\nline two"
        await chat.expect_status("idle")
        await chat.send_task("Summarise https://example.com/" + "a-very-long-path-without-any-break" * 4)
        await chat.expect_status("succeeded")
        await expect(chat.page.locator(AGENT_BUBBLE)).to_have_count(2)
        assert await chat.page.evaluate(width) <= 375
        await chat.shot("2-run")

        toggle = chat.page.get_by_role("button", name="Show history")
        await toggle.click()
        history = chat.page.get_by_role("complementary", name="Conversation history")
        await expect(history).to_be_visible()
        await expect(history.get_by_test_id("history-item")).to_have_count(1)
        assert await chat.page.evaluate(width) <= 375
        await chat.shot("3-history")
        await chat.page.keyboard.press("Escape")
        await expect(history).to_be_hidden()
        await expect(toggle).to_be_focused()
    finally:
        await context.close()
    assert chat.errors == []


async def test_reconnect_misses_nothing_and_doubles_nothing(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("duo", model="fake/t40-d20", max_messages=3))
    await chat.open()
    await chat.pick_team("duo")
    await chat.send_task("Keep talking while the network flaps.")
    connection = chat.page.get_by_test_id("connection")

    # drop the socket in the middle of each agent's message
    for step, speaker in enumerate(("writer", "critic"), start=1):
        await chat.wait_streaming_growth(speaker)
        await chat.page.evaluate("window.__swarm.dropSocket()")
        await expect(connection).not_to_have_attribute("data-state", "open")
        await expect(connection).to_have_attribute("data-state", "open")
        await chat.shot(f"{step}-reconnected-in-{speaker}")

    await chat.expect_status("succeeded")
    run = (await chat.page.evaluate("window.__swarm.runs"))[0]
    finished = await wait_for_status(live_client, run["id"], {"succeeded"})
    assert run["lastSeq"] == finished["last_seq"]
    stored = await chat.assert_bubbles_match(live_client)
    assert len(stored) == 3
    await chat.shot("3-done")


async def test_reload_mid_run_follows_the_run_to_its_end(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    await create_team(live_client, team("duo", model="fake/t40-d20", max_messages=3))
    await chat.open()
    await chat.pick_team("duo")
    await chat.send_task("Survive a reload.")
    await chat.wait_streaming_growth("writer")

    await chat.page.reload()  # the conversation is in the URL; its live run is followed again
    await expect(chat.page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    await chat.expect_status("succeeded")
    await chat.assert_bubbles_match(live_client)
    await expect(chat.page.get_by_test_id("run-summary")).to_have_count(1)
    await chat.shot("1-done")


async def test_tool_calls_and_handoffs_show_inline_and_markup_stays_text(
    chat: ChatPage, live_client: httpx.AsyncClient
) -> None:
    markup = 'The answer is 42. <b id="bold">bold?</b> <img id="pwned" src="x"> TERMINATE'
    planner_script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"handoff": "solver"},
    ]
    members = [
        agent("planner", tools=["calculator"], handoffs=["solver"], model_options={"script": planner_script}),
        agent("solver", handoffs=["planner"], model_options={"script": [{"text": markup}]}),
    ]
    spec = team("swarmy", kind="swarm", members=members, max_messages=8, termination={"text_mention": "TERMINATE"})
    await create_team(live_client, spec)
    await chat.open()
    await chat.pick_team("swarmy")
    await chat.send_task("What is six times seven?")
    await chat.expect_status("succeeded")

    calls = chat.page.get_by_test_id("tool-call")
    calculator = calls.filter(has_text="calculator")
    await expect(calculator).to_have_attribute("data-state", "done")
    await calculator.locator("summary").click()
    await expect(calculator.get_by_test_id("tool-result")).to_have_text("42")
    handoff = chat.page.locator("[data-testid=bubble][data-kind=handoff]")
    await expect(handoff).to_have_attribute("data-target", "solver")
    await expect(handoff).to_have_attribute("data-agent", "planner")

    solver = chat.page.locator("[data-testid=bubble][data-agent=solver] [data-testid=bubble-text]")
    await expect(solver).to_have_text(markup)
    assert await chat.page.locator("#bold, #pwned").count() == 0
    await chat.assert_bubbles_match(live_client)
    await chat.shot("1-done")


async def test_socket_lost_right_after_sending_starts_exactly_one_run(
    chat: ChatPage, live_client: httpx.AsyncClient
) -> None:
    await create_team(live_client, team("quick", model="fake/t8", max_messages=3))
    await chat.open()
    await chat.pick_team("quick")
    box = chat.page.get_by_label("Task", exact=True)
    await box.fill("Sent into a flaky network.")
    # the run.start frame leaves on Enter; the socket drops before (or just after) its ack comes back
    await box.evaluate(
        """(box) => {
            box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true}));
            window.__swarm.dropSocket();
        }"""
    )
    await chat.expect_status("succeeded")
    await chat.assert_bubbles_match(live_client)
    runs = (await live_client.get("/v1/runs", params={"conversation_id": await chat.conversation_id()})).json()
    assert len(runs["data"]) == 1
    assert len((await live_client.get("/v1/runs")).json()["data"]) == 1
    await chat.shot("1-done")


async def test_refused_start_shows_the_error_and_keeps_the_task(chat: ChatPage, live_client: httpx.AsyncClient) -> None:
    gone = await create_team(live_client, team("gone", model="fake/t8", max_messages=3))
    await chat.open()
    await chat.pick_team("gone")
    assert (await live_client.delete(f"/v1/teams/{gone['id']}")).status_code == 204
    await chat.send_task("Nobody is there.")

    status_line = chat.page.get_by_test_id("status-line")
    await expect(status_line).to_contain_text("did not start")
    await expect(status_line).to_have_attribute("data-kind", "error")
    await expect(chat.page.locator(BUBBLE)).to_have_count(0)
    await expect(chat.page.get_by_test_id("empty-state")).to_be_visible()
    await expect(chat.page.get_by_label("Task", exact=True)).to_have_value("Nobody is there.")
    await expect(chat.page.get_by_label("Team").locator("option", has_text="gone")).to_have_count(0)
    await chat.expect_status("idle")
    await expect(chat.page.get_by_role("button", name="Send", exact=True)).to_be_enabled()
    await chat.shot("1-refused")


async def test_a_server_that_requires_keys_asks_for_one_in_place(browser: Browser, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_required=True)
    made = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "create", "--name", "browser"],
        env={**os.environ, "SWARM_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        check=True,
    )
    key = made.stdout.strip()
    assert key.startswith("sd_")
    server = LiveServer(settings).start()
    page = await browser.new_page()
    crashes: list[str] = []
    page.on("pageerror", lambda exc: crashes.append(str(exc)))  # 401s in the console are expected here
    try:
        await page.goto(server.url + "/")
        dialog = page.get_by_role("dialog", name="This server needs an API key")
        await expect(dialog).to_be_visible()
        await page.screenshot(path=str(shot_path("key_prompt", "1-asked")))
        await page.get_by_label("API key", exact=True).fill("sd_not-a-key-at-all")
        await page.get_by_role("button", name="Use this key").click()
        await expect(dialog).to_be_visible()  # refused: asked again
        await page.get_by_label("API key", exact=True).fill(key)
        await page.get_by_role("button", name="Use this key").click()
        await expect(dialog).to_be_hidden()
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await expect(page.get_by_label("Team")).not_to_have_value("")
        await page.get_by_label("Task").fill("Say hello.")
        await page.get_by_role("button", name="Send").click()
        await expect(page.get_by_test_id("run-status")).to_have_attribute("data-status", "succeeded")
        await expect(page.locator(AGENT_BUBBLE).first).to_be_visible()
        await page.screenshot(path=str(shot_path("key_prompt", "2-ran")))
        assert crashes == []
        # the key stays with this tab: a reload needs no new prompt
        await page.reload()
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        await expect(dialog).to_be_hidden()
    finally:
        await page.close()
        server.stop()


def shot_path(test: str, step: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{test}-{step}.png"


class RestartedServer:
    """``swarmdirector serve`` on one port and one SQLite file, ``kill -9``ed and started again there (the
    page finds it again by itself), with a browser page on it and an HTTP client."""

    def __init__(self, browser: Browser, tmp_path: Path, name: str, **env: str) -> None:
        self.browser, self.name, self.env = browser, name, env
        self.port = free_port()
        self.database_url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> RestartedServer:
        self.procs.append(spawn_serve(self.port, self.database_url, **self.env))
        self.context = await self.browser.new_context(viewport={"width": 1280, "height": 800})
        self.client = httpx.AsyncClient(base_url=self.base, timeout=30)
        await wait_until_up(self.client, self.procs[0])
        self.chat = ChatPage(await self.context.new_page(), cast(LiveServer, SimpleNamespace(url=self.base)), self.name)
        return self

    async def kill_and_restart(self) -> None:
        self.procs[-1].send_signal(signal.SIGKILL)
        self.procs[-1].wait(timeout=10)
        await expect(self.chat.page.get_by_test_id("connection")).not_to_have_attribute("data-state", "open")
        self.procs.append(spawn_serve(self.port, self.database_url, **self.env))  # the same address
        await wait_until_up(self.client, self.procs[-1])

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.context.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


async def test_a_server_killed_mid_answer_takes_back_the_text_it_never_stored(browser: Browser, tmp_path: Path) -> None:
    """`kill -9` while an answer streams: the restarted server settles the run (`lost_after_seq`), the
    page reconnects by itself, and the bubble keeps exactly the text of the deltas that were stored."""
    async with RestartedServer(browser, tmp_path, "crash") as server:
        client, chat = server.client, server.chat
        await create_team(client, team("talker", model="fake/t4000-d2", max_messages=2))
        await chat.open()
        await chat.pick_team("talker")
        await chat.send_task("Talk until the power goes.")
        await chat.wait_streaming_growth("writer")
        run_id = (await chat.page.evaluate("window.__swarm.runs"))[0]["id"]
        async with asyncio.timeout(20):  # some of the answer is stored, and more is streaming
            while not (await client.get(f"/v1/runs/{run_id}/events/page", params={"after": 3})).json()["data"]:
                await asyncio.sleep(0.05)
        await chat.wait_streaming_growth("writer")
        await server.kill_and_restart()

        await chat.expect_status("failed")
        page = (await client.get(f"/v1/runs/{run_id}/events/page", params={"limit": 1000})).json()
        events = page["data"]
        while page["has_more"]:
            page = (await client.get(f"/v1/runs/{run_id}/events/page", params={"after": page["last_seq"]})).json()
            events += page["data"]
        end = events[-1]
        assert end["data"]["error"]["code"] == "server_restarted" and "lost_after_seq" in end["data"], end
        stored = "".join(
            e["data"]["text"] for e in events if e["type"] == "message.delta" and e["data"]["agent"] == "writer"
        )
        writer = [b for b in await chat.bubbles() if b["agent"] == "writer"]
        assert len(writer) == 1 and writer[0]["state"] == "interrupted", writer
        assert writer[0]["text"] == stored, "the bubble shows what was stored, not what was lost"
        assert stored, "the answer had begun"
        await chat.shot("1-settled")


async def test_a_run_that_resumes_after_kill_9_shows_its_abandoned_text_as_interrupted(
    browser: Browser, tmp_path: Path
) -> None:
    """`kill -9` mid-answer, the server set to give runs a retry: the restarted server resumes the run,
    the page marks the bubble it was streaming interrupted (``run.requeued`` names it abandoned), and
    the answer made again arrives as a bubble of its own."""
    async with RestartedServer(browser, tmp_path, "resume", SWARM_RUN_RETRIES="1") as server:
        client, chat = server.client, server.chat
        await create_team(client, team("talker", model="fake/t1500-d2", max_messages=2))
        await chat.open()
        await chat.pick_team("talker")
        await chat.send_task("Talk until the power goes.")
        await chat.wait_streaming_growth("writer")
        run_id = (await chat.page.evaluate("window.__swarm.runs"))[0]["id"]
        await server.kill_and_restart()

        await chat.expect_status("succeeded")
        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert run["attempts"] == 2, run
        writer = [b for b in await chat.bubbles() if b["agent"] == "writer"]
        assert [b["state"] for b in writer] == ["interrupted", "final"], writer
        assert writer[1]["text"] == run["result"]["text"], "the answer made again, whole"
        await chat.shot("1-resumed")
