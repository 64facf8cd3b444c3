"""Server-side tools: built-ins, the history search, entry points, and per-call timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from autogen_core import CancellationToken

from app.engine.tools import ToolContext, ToolRegistry, calculator
from tests.conftest import make_settings, serve_app
from tests.fixtures.runs import stored_events, wait_for_status, wait_run
from tests.fixtures.specs import agent, run_body, team


def tool_team(tool: str, arguments: dict[str, Any], model: str = "fake/t3") -> dict[str, Any]:
    script = [{"tool_calls": [{"name": tool, "arguments": arguments}]}]
    solver = agent("solver", model, tools=[tool], model_options={"script": script})
    return team(kind="single", members=[solver], max_messages=None)


async def tool_result(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    run = await wait_run(client, **body)
    return run, next(e["data"] for e in await stored_events(client, run["id"]) if e["type"] == "tool.result")


async def test_calculator_refuses_anything_but_arithmetic() -> None:
    assert await calculator("2 * (3 + 4)") == "14"
    assert await calculator("7 / 2") == "3.5"
    for bad in ("__import__('os')", "a + 1", "2 ** 1000", "[1, 2]"):
        with pytest.raises(ValueError):
            await calculator(bad)


async def test_search_history_reads_the_runs_own_conversation(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/runs/wait", json=run_body(task="The password is pineapple."))).json()
    other = (await client.post("/v1/runs/wait", json=run_body(task="Another pineapple elsewhere."))).json()
    assert other["conversation_id"] != first["conversation_id"]
    body = run_body(team=tool_team("search_history", {"query": "PINEAPPLE"}), conversation_id=first["conversation_id"])
    run, result = await tool_result(client, body)
    assert run["status"] == "succeeded"
    assert result["is_error"] is False
    assert "[1] user: The password is pineapple." in result["content"]
    assert "elsewhere" not in result["content"]  # never another conversation's messages
    _, result = await tool_result(client, run_body(team=tool_team("search_history", {"query": "100%_off"})))
    assert result["content"] == "No earlier message mentions '100%_off'."


async def test_search_history_reads_through_the_runs_context() -> None:
    asked: list[tuple[str, str, int]] = []

    async def history(conversation_id: str, query: str, limit: int) -> list[SimpleNamespace]:
        asked.append((conversation_id, query, limit))
        return [SimpleNamespace(position=3, agent="writer", content="Pineapple again.")] if query == "pine" else []

    tool = ToolRegistry.with_builtins().build("search_history", ToolContext("r", "conv_1", "p", history))
    token = CancellationToken()
    assert await tool.run_json({"query": " pine ", "limit": 99}, token) == "[3] writer: Pineapple again."
    assert await tool.run_json({"query": "kiwi"}, token) == "No earlier message mentions 'kiwi'."
    assert asked == [("conv_1", "pine", 20), ("conv_1", "kiwi", 5)]


async def test_operator_tools_come_from_entry_points_and_calls_are_bounded(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, tools=["tests.fixtures.tools:shout", "tests.fixtures.tools:sleepy"], tool_timeout_s=0.1
    )
    async with serve_app(settings) as (_, client):
        listed = (await client.get("/v1/models")).json()["tools"]
        assert {"shout", "sleepy", "calculator", "current_time", "search_history"} <= set(listed)
        run, result = await tool_result(client, run_body(team=tool_team("shout", {"text": "hi"})))
        assert result == {**result, "content": "HI!", "is_error": False}
        run, result = await tool_result(client, run_body(team=tool_team("sleepy", {"seconds": 5})))
        assert result["is_error"] is True
        assert "did not finish within 0.1 s" in result["content"]
        assert run["status"] == "succeeded"  # the model got the error and the run went on


def test_bad_entry_points_are_refused_at_start() -> None:
    registry = ToolRegistry()
    for spec in ("no_colon", "tests.fixtures.tools:NOT_A_TOOL", "tests.fixtures.tools:missing"):
        with pytest.raises((ValueError, AttributeError)):
            registry.load_entry_points([spec])
    registry.load_entry_points(["tests.fixtures.tools:shout"])
    with pytest.raises(ValueError, match="registered already"):
        registry.load_entry_points(["tests.fixtures.tools:shout"])


async def test_a_tool_built_per_run_shares_its_argument_model_and_calls_its_own_function() -> None:
    registry = ToolRegistry.with_builtins()

    def whose(ctx: ToolContext) -> Any:
        async def whose_run(shout: bool = False) -> str:
            """Which run asks."""
            return ctx.run_id.upper() if shout else ctx.run_id

        return whose_run

    registry.register_builder(whose, name="whose", description="Which run asks.")

    def ctx(run_id: str) -> ToolContext:
        return ToolContext(run_id, "conv", "p", None)  # type: ignore[arg-type]

    a, b = registry.build("whose", ctx("run_a")), registry.build("whose", ctx("run_b"))
    assert a is not b and a.args_type() is b.args_type()  # the model built once, from the first
    assert a.schema == b.schema
    token = CancellationToken()
    assert await a.run_json({"shout": True}, token) == "RUN_A"
    assert await b.run_json({}, token) == "run_b"
    # a plain function: the same tool shape for every run as well
    c, d = registry.build("current_time", ctx("x")), registry.build("current_time", ctx("y"))
    assert c.args_type() is d.args_type() and c is not d


async def test_a_builder_that_returns_another_function_gets_its_own_model() -> None:
    registry = ToolRegistry()

    def one(a: int) -> int:
        return a

    def two(a: int, b: int) -> int:
        return a + b

    funcs = iter([one, two])
    registry.register_builder(lambda _ctx: next(funcs), name="changing", description="Not the same code twice.")
    ctx = ToolContext("r", "c", "p", None)  # type: ignore[arg-type]
    first, second = registry.build("changing", ctx), registry.build("changing", ctx)
    assert first.args_type() is not second.args_type()
    assert set(second.args_type().model_fields) == {"a", "b"}


async def test_a_run_cancelled_while_a_tool_runs_ends_cancelled_and_the_call_stops(tmp_path: Path) -> None:
    # AutoGen waits for an agent's tool calls to finish: a call cancelled by the run's token must end
    # as a result (an error), or the agent, and the run, would wait for it forever
    settings = make_settings(tmp_path, tools=["tests.fixtures.tools:sleepy"], tool_timeout_s=60)
    async with serve_app(settings) as (_, client):
        body = run_body(team=tool_team("sleepy", {"seconds": 60}))
        run = (await client.post("/v1/runs", json=body)).json()
        async with asyncio.timeout(15):
            while not any(e["type"] == "tool.call" for e in await stored_events(client, run["id"])):
                await asyncio.sleep(0.02)
        r = await client.post(f"/v1/runs/{run['id']}/cancel")
        assert r.status_code in (200, 202), r.text
        done = await wait_for_status(client, run["id"], {"succeeded", "failed", "cancelled", "timed_out"}, timeout=10)
        assert done["status"] == "cancelled", done


async def test_a_tool_that_is_not_idempotent_acts_only_once_its_call_is_logged() -> None:
    registry = ToolRegistry()
    acted: list[str] = []

    async def note(text: str) -> str:
        acted.append(text)
        return "noted"

    registry.register(note)
    registry.register(calculator, idempotent=True)
    released = asyncio.Event()
    waited: list[str] = []

    async def logged(call_id: str) -> None:
        waited.append(call_id)
        await released.wait()

    ctx = ToolContext("r", "c", "p", lambda *_: asyncio.sleep(0, []), logged=logged)
    token = CancellationToken()
    call = asyncio.ensure_future(registry.build("note", ctx).run_json({"text": "milk"}, token, call_id="call_1"))
    await asyncio.sleep(0.01)
    assert waited == ["call_1"] and acted == [], "it waits for its `tool.call` in the log before it acts"
    released.set()
    assert await call == "noted" and acted == ["milk"]
    # an idempotent tool does not wait: running it again after a crash is harmless
    assert await registry.build("calculator", ctx).run_json({"expression": "1+1"}, token, call_id="call_2") == "2"
    assert waited == ["call_1"]


async def test_the_tool_list_gives_each_tool_s_schema_source_and_marks(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        tools=["tests.fixtures.tools:shout", "tests.fixtures.tools:slow_note"],
        tools_require_approval=["slow_note"],
        tools_idempotent=["shout"],
    )
    async with serve_app(settings) as (_, client):
        r = await client.get("/v1/tools")
        assert r.status_code == 200, r.text
        body = r.json()
    tools = {t["name"]: t for t in body["data"]}
    assert body["object"] == "list" and list(tools) == sorted(tools)
    assert {"calculator", "current_time", "search_history", "shout", "slow_note"} == set(tools)
    calculator_ = tools["calculator"]
    assert calculator_["source"] == "builtin" and calculator_["idempotent"] is True
    assert calculator_["parameters"]["properties"]["expression"]["type"] == "string"
    assert calculator_["parameters"]["required"] == ["expression"]
    assert tools["shout"] == {**tools["shout"], "source": "entry_point", "idempotent": True, "requires_approval": False}
    assert tools["slow_note"] == {
        **tools["slow_note"],
        "source": "entry_point",
        "idempotent": False,
        "requires_approval": True,
        "description": "Write a note to the file named by `SWARM_TEST_NOTES` (one line per call), then take a minute.",
    }
