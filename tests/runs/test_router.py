"""`/v1/runs` without streaming: start, wait, list, read, event pages, cancel, admission and bad input.

Everything runs in-process on the fake model. A run that must still be going
when the test acts uses a slow fake (``fake/t400-d5``: two seconds a reply)
and is always cancelled before the test ends.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import Backend, serve_app
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.runs import start_run, stored_events, wait_for_status, wait_run
from tests.fixtures.specs import agent, run_body, team

TERMINAL_EVENTS = {"run.completed", "run.failed", "run.cancelled"}
SLOW = "fake/t400-d5"
REPLY = re.compile(r"^Fake reply (\d+) after (\d+) messages:")


# -- helpers -------------------------------------------------------------------------------------


async def cancel(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    r = await client.post(f"/v1/runs/{run_id}/cancel")
    assert r.status_code in (200, 202), r.text
    return await wait_for_status(client, run_id, {"cancelled"})


async def list_all(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(path, params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def counts(client: httpx.AsyncClient) -> tuple[int, int]:
    """How many runs and conversations exist (both lists fit one page in these tests)."""
    return len(await list_all(client, "/v1/runs")), len(await list_all(client, "/v1/conversations"))


def reply_message_count(text: str) -> int:
    """M in the fake model's ``Fake reply N after M messages:``: the size of the model call's context."""
    match = REPLY.match(text)
    assert match, f"not a generated fake reply: {text!r}"
    return int(match.group(2))


def single(name: str = "solo", model: str = "fake/t4") -> dict[str, Any]:
    return team("one", kind="single", members=[agent(name, model)], max_messages=None)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
async def limited_client(backend: Backend, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server with small limits: tasks of at most 50 characters, bodies of at most 1024 bytes."""
    async with serve_app(backend.settings(tmp_path, max_task_chars=50, max_body_bytes=1024)) as (_, c):
        yield c


# -- starting and finishing ----------------------------------------------------------------------


async def test_create_is_202_with_a_location_and_the_run_succeeds(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/runs", json=run_body(metadata={"ticket": "T-1", "n": 3, "ok": True}))
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["id"].startswith("run_")
    assert run["object"] == "run"
    assert r.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["conversation_id"].startswith("conv_")
    assert run["team_id"] is None
    assert run["team_name"] == "pair"
    assert run["task"] == "Write a haiku about rivers."
    assert run["metadata"] == {"ticket": "T-1", "n": 3, "ok": True}
    assert run["if_busy"] == "reject"
    assert run["timeout_s"] == 600
    assert run["last_seq"] == 0

    done = await wait_for_status(client, run["id"], {"succeeded", "failed", "cancelled", "timed_out"})
    assert done["status"] == "succeeded"
    assert done["message_count"] == 3  # the task and two replies (max_messages 3)
    assert done["usage"]["total_tokens"] > 0
    assert done["metadata"] == run["metadata"]
    assert ts(done["created_at"]) <= ts(done["started_at"]) <= ts(done["finished_at"])
    assert done["last_seq"] == len(await stored_events(client, run["id"]))


async def test_wait_returns_the_finished_run_with_usage_and_result(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=team(model="fake/t6", max_messages=3))
    assert run["status"] == "succeeded"
    assert run["error"] is None
    assert run["finished_at"] is not None
    usage = run["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["completion_tokens"] > 0
    result = run["result"]
    assert result is not None
    assert result["agent"] == "critic"  # writer, then critic: the last of two replies
    assert REPLY.match(result["text"])
    messages = (await client.get(f"/v1/conversations/{run['conversation_id']}/messages")).json()["data"]
    assert messages[-1]["id"] == result["message_id"]
    assert messages[-1]["text"] == result["text"]
    assert (await client.get(f"/v1/runs/{run['id']}")).json() == run


async def test_wait_returns_a_failed_run_as_200_with_its_error(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single(model="fake/t3-fail"))
    assert run["status"] == "failed"
    assert run["error"]["code"] == "model_error"
    assert run["result"] is None


async def test_a_run_of_the_stored_demo_team_by_name(client: httpx.AsyncClient) -> None:
    demo = (await client.get("/v1/teams/demo")).json()
    run = await wait_run(client, team_id="demo", task="Describe a lighthouse.")
    assert run["status"] == "succeeded"
    assert run["team_id"] == demo["id"]
    assert run["team_name"] == "demo"
    assert run["message_count"] == 5  # the demo team stops after five messages
    assert run["result"]["agent"] in {"writer", "critic"}
    conversation = (await client.get(f"/v1/conversations/{run['conversation_id']}")).json()
    assert conversation["team_id"] == demo["id"]


async def test_a_run_of_a_stored_team_by_id(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/teams", json=team("stored", model="fake/t3", max_messages=2))).json()
    run = await wait_run(client, team_id=created["id"])
    assert run["status"] == "succeeded"
    assert run["team_id"] == created["id"]
    assert run["team_name"] == "stored"
    assert run["message_count"] == 2


async def test_a_stored_team_runs_its_stored_agents(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/agents", json=agent("helper", "fake/t3"))).status_code == 201
    created = (await client.post("/v1/teams", json=team("withref", members=["helper"], kind="single"))).json()
    run = await wait_run(client, team_id=created["id"])
    assert run["status"] == "succeeded"
    assert run["result"]["agent"] == "helper"


async def test_a_stored_team_whose_agent_was_deleted_cannot_run(client: httpx.AsyncClient) -> None:
    stored = (await client.post("/v1/agents", json=agent("helper", "fake/t3"))).json()
    await client.post("/v1/teams", json=team("withref", members=["helper"], kind="single"))
    assert (await client.delete(f"/v1/agents/{stored['id']}")).status_code == 204
    before = await counts(client)
    r = await client.post("/v1/runs", json={"team_id": "withref", "task": "hi"})
    body = assert_field_error(r, ["body", "team_id", "members", 0], "unknown_agent")
    assert "withref" in body["detail"]
    assert await counts(client) == before


# -- listing -------------------------------------------------------------------------------------


async def test_list_pages_with_a_cursor_newest_first(client: httpx.AsyncClient) -> None:
    ids = [(await wait_run(client, task=f"task {i}", team=single()))["id"] for i in range(3)]
    first = (await client.get("/v1/runs", params={"limit": 2})).json()
    assert [r["id"] for r in first["data"]] == [ids[2], ids[1]]
    assert first["next_cursor"]
    second = (await client.get("/v1/runs", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [r["id"] for r in second["data"]] == [ids[0]]
    assert second.get("next_cursor") is None


async def test_list_filters_by_status_conversation_and_team(client: httpx.AsyncClient) -> None:
    demo_id = (await client.get("/v1/teams/demo")).json()["id"]
    ok = await wait_run(client, team=single())
    failed = await wait_run(client, team=single(model="fake/fail"))
    follow_up = await wait_run(client, team=single(), conversation_id=ok["conversation_id"])
    by_team = await wait_run(client, team_id="demo")
    assert failed["status"] == "failed"

    async def ids(**params: Any) -> list[str]:
        return [r["id"] for r in await list_all(client, "/v1/runs", **params)]

    assert await ids() == [by_team["id"], follow_up["id"], failed["id"], ok["id"]]
    assert await ids(status="failed") == [failed["id"]]
    assert await ids(status="succeeded") == [by_team["id"], follow_up["id"], ok["id"]]
    assert await ids(status="running") == []
    assert await ids(conversation_id=ok["conversation_id"]) == [follow_up["id"], ok["id"]]
    assert await ids(conversation_id="conv_unknown") == []
    assert await ids(team_id=demo_id) == [by_team["id"]]
    assert await ids(status="succeeded", conversation_id=ok["conversation_id"], limit=1) == [follow_up["id"]]


async def test_list_refuses_an_unknown_status(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/runs", params={"status": "exploded"}), 422, "invalid_request")
    assert body["errors"][0]["loc"] == ["query", "status"]


async def test_list_refuses_a_bad_cursor(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/runs", params={"cursor": "\xff\xfe"}), 400, "invalid_cursor")


# -- the JSON event page -------------------------------------------------------------------------


async def test_event_pages_are_dense_from_one_and_end_with_one_terminal_event(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=team(model="fake/t5", max_messages=3))
    url = f"/v1/runs/{run['id']}/events"
    accept = {"accept": "application/json"}

    events: list[dict[str, Any]] = []
    after = 0
    pages = 0
    while True:
        r = await client.get(url, headers=accept, params={"after": after, "limit": 4})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        page = r.json()
        pages += 1
        assert len(page["data"]) <= 4
        if page["data"]:
            assert page["last_seq"] == page["data"][-1]["seq"]
        events.extend(page["data"])
        after = page["last_seq"]
        if not page["has_more"]:
            break
        assert len(page["data"]) == 4
        assert pages < 100
    assert pages > 1

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events == await stored_events(client, run["id"])
    assert len(events) == run["last_seq"]
    assert {e["run_id"] for e in events} == {run["id"]}
    assert events[0]["type"] == "run.queued" and events[1]["type"] == "run.started"
    terminal = [e for e in events if e["type"] in TERMINAL_EVENTS]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    assert events[-1]["type"] == "run.completed"
    usage = dict(events[-1]["data"]["usage"])
    # the terminal event has the run's usage, and it per model
    assert usage.pop("by_model") == [
        {"model": "fake/t5", **{k: run["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}
    ]
    assert usage == run["usage"]
    completed = [e for e in events if e["type"] == "message.completed"]
    assert len(completed) == run["message_count"] == 3
    for e in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"]), e["at"]


async def test_an_event_page_after_the_last_seq_is_empty(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single())
    r = await client.get(
        f"/v1/runs/{run['id']}/events",
        headers={"accept": "application/json"},
        params={"after": run["last_seq"]},
    )
    assert r.status_code == 200
    assert r.json() == {"data": [], "last_seq": run["last_seq"], "has_more": False}


async def test_an_event_page_exactly_as_long_as_the_rest_has_no_more(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single())
    n = run["last_seq"]
    r = await client.get(
        f"/v1/runs/{run['id']}/events", headers={"accept": "application/json"}, params={"after": 1, "limit": n - 1}
    )
    page = r.json()
    assert [e["seq"] for e in page["data"]] == list(range(2, n + 1))
    assert page["has_more"] is False
    assert page["last_seq"] == n


async def test_events_as_sse_replay_a_finished_run(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single())
    r = await client.get(f"/v1/runs/{run['id']}/events", params={"after": run["last_seq"] - 1})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert re.findall(r"^id: (\d+)\r?$", r.text, re.MULTILINE) == [str(run["last_seq"])]
    assert re.findall(r"^event: (\S+)\r?$", r.text, re.MULTILINE) == ["run.completed"]


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_stops_a_running_run_and_is_idempotent(client: httpx.AsyncClient) -> None:
    run = await start_run(client, team=team(model=SLOW))
    await wait_for_status(client, run["id"], {"running"})
    r = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code in (200, 202), r.text
    done = await wait_for_status(client, run["id"], {"cancelled"})
    assert done["stop_reason"] == "cancelled"
    assert done["finished_at"] is not None
    again = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    events = await stored_events(client, run["id"])
    assert events[-1]["type"] == "run.cancelled"
    assert [e["type"] for e in events].count("run.cancelled") == 1


async def test_cancel_of_a_succeeded_run_is_409(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single())
    body = assert_problem(await client.post(f"/v1/runs/{run['id']}/cancel"), 409, "run_finished")
    assert "succeeded" in body["detail"]
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "succeeded"


async def test_unknown_run_ids_are_404(client: httpx.AsyncClient) -> None:
    missing = "run_01JDAX3G4F6Q3C9W8R4T0M2N7B"
    assert_problem(await client.get(f"/v1/runs/{missing}"), 404, "not_found")
    json_events = await client.get(f"/v1/runs/{missing}/events", headers={"accept": "application/json"})
    assert_problem(json_events, 404, "not_found")
    assert_problem(await client.get(f"/v1/runs/{missing}/events"), 404, "not_found")
    assert_problem(await client.post(f"/v1/runs/{missing}/cancel"), 404, "not_found")


# -- conversations that are busy -----------------------------------------------------------------


async def test_a_busy_conversation_rejects_a_second_run(client: httpx.AsyncClient) -> None:
    first = await start_run(client, team=team(model=SLOW))
    before = await counts(client)
    r = await client.post("/v1/runs", json=run_body(team=single(), conversation_id=first["conversation_id"]))
    body = assert_problem(r, 409, "conversation_busy")
    assert first["id"] in body["detail"]
    assert await counts(client) == before
    assert (await cancel(client, first["id"]))["status"] == "cancelled"


async def test_enqueue_starts_after_the_run_in_front_finishes(client: httpx.AsyncClient) -> None:
    first = await start_run(client, team=team(model="fake/t30-d3", max_messages=3))
    second = await start_run(client, team=single(), conversation_id=first["conversation_id"], if_busy="enqueue")
    assert second["conversation_id"] == first["conversation_id"]
    assert second["status"] == "queued"
    second = await wait_for_status(client, second["id"], {"succeeded", "failed", "cancelled", "timed_out"})
    first = (await client.get(f"/v1/runs/{first['id']}")).json()
    assert first["status"] == "succeeded"
    assert second["status"] == "succeeded"
    assert ts(second["started_at"]) >= ts(first["finished_at"])
    messages = (await client.get(f"/v1/conversations/{first['conversation_id']}/messages")).json()["data"]
    assert [m["position"] for m in messages] == list(range(1, len(messages) + 1))
    assert [m["run_id"] for m in messages] == [first["id"]] * 3 + [second["id"]] * 2


async def test_interrupt_cancels_the_run_going_and_starts(client: httpx.AsyncClient) -> None:
    first = await start_run(client, team=team(model=SLOW))
    second = await start_run(client, team=single(), conversation_id=first["conversation_id"], if_busy="interrupt")
    second = await wait_for_status(client, second["id"], {"succeeded", "failed", "cancelled", "timed_out"})
    assert second["status"] == "succeeded"
    first = await wait_for_status(client, first["id"], {"succeeded", "failed", "cancelled", "timed_out"})
    assert first["status"] == "cancelled"
    assert first["stop_reason"] == "interrupted"
    terminal = (await stored_events(client, first["id"]))[-1]
    assert terminal["type"] == "run.cancelled"
    assert terminal["data"]["reason"] == "interrupted"


async def test_a_queued_run_behind_a_running_one_is_cancelled_before_it_starts(client: httpx.AsyncClient) -> None:
    first = await start_run(client, team=team(model=SLOW))
    queued = await start_run(client, team=single(), conversation_id=first["conversation_id"], if_busy="enqueue")
    r = await client.post(f"/v1/runs/{queued['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["started_at"] is None
    events = await stored_events(client, queued["id"])
    assert [e["type"] for e in events] == ["run.queued", "run.cancelled"]
    assert [e["seq"] for e in events] == [1, 2]
    # the run in front is untouched, and still makes the conversation busy
    assert (await client.get(f"/v1/runs/{first['id']}")).json()["status"] in {"queued", "running"}
    r = await client.post("/v1/runs", json=run_body(team=single(), conversation_id=first["conversation_id"]))
    assert_problem(r, 409, "conversation_busy")
    await cancel(client, first["id"])


async def test_cancel_of_a_failed_run_is_409(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single(model="fake/fail"))
    assert run["status"] == "failed"
    assert_problem(await client.post(f"/v1/runs/{run['id']}/cancel"), 409, "run_finished")


async def test_if_busy_on_an_idle_conversation_just_runs(client: httpx.AsyncClient) -> None:
    first = await wait_run(client, team=single())
    for mode in ("reject", "enqueue", "interrupt"):
        run = await wait_run(client, team=single(), conversation_id=first["conversation_id"], if_busy=mode)
        assert run["status"] == "succeeded"
        assert run["if_busy"] == mode


# -- continuing a conversation -------------------------------------------------------------------


async def test_a_second_run_of_the_same_team_continues_with_the_first_runs_context(
    client: httpx.AsyncClient,
) -> None:
    first = await wait_run(client, team=single(), task="Name a river.")
    second = await wait_run(client, team=single(), task="Now a longer one.", conversation_id=first["conversation_id"])
    assert first["status"] == second["status"] == "succeeded"
    assert second["conversation_id"] == first["conversation_id"]
    m1 = reply_message_count(first["result"]["text"])
    m2 = reply_message_count(second["result"]["text"])
    # the second call also carries the first task and the first reply
    assert m2 >= m1 + 2
    conversation = (await client.get(f"/v1/conversations/{first['conversation_id']}")).json()
    assert conversation["message_count"] == 4
    assert conversation["has_state"] is True


async def test_a_different_team_continues_from_the_stored_messages(client: httpx.AsyncClient) -> None:
    first = await wait_run(client, team=single("solo"), task="Name a river.")
    second = await wait_run(
        client, team=single("other"), task="Now a longer one.", conversation_id=first["conversation_id"]
    )
    assert second["status"] == "succeeded"
    assert second["result"]["agent"] == "other"
    m1 = reply_message_count(first["result"]["text"])
    m2 = reply_message_count(second["result"]["text"])
    assert m2 >= m1 + 2
    messages = (await client.get(f"/v1/conversations/{first['conversation_id']}/messages")).json()["data"]
    # the replayed history is context, not new messages: the conversation holds each message once
    assert [(m["agent"], m["run_id"]) for m in messages] == [
        ("user", first["id"]),
        ("solo", first["id"]),
        ("user", second["id"]),
        ("other", second["id"]),
    ]
    assert second["message_count"] == 2


async def test_a_run_enqueued_behind_another_sees_that_runs_messages(client: httpx.AsyncClient) -> None:
    base = await wait_run(client, team=single(), task="First.")
    conversation_id = base["conversation_id"]
    middle = await start_run(client, team=single(model="fake/t60-d3"), task="Second.", conversation_id=conversation_id)
    last = await start_run(client, team=single(), task="Third.", conversation_id=conversation_id, if_busy="enqueue")
    last = await wait_for_status(client, last["id"], {"succeeded", "failed", "cancelled", "timed_out"})
    middle = (await client.get(f"/v1/runs/{middle['id']}")).json()
    assert middle["status"] == last["status"] == "succeeded"
    m_base = reply_message_count(base["result"]["text"])
    m_middle = reply_message_count(middle["result"]["text"])
    m_last = reply_message_count(last["result"]["text"])
    assert m_middle >= m_base + 2
    assert m_last >= m_middle + 2, "the enqueued run must continue from the run in front of it"


# -- bad input: a clear problem, and nothing changes ---------------------------------------------


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    r = await client.post("/v1/runs", content=b'{"task": "x", ', headers={"content-type": "application/json"})
    assert_problem(r, 400, "malformed_json")
    assert await counts(client) == before


async def test_an_unknown_team_id_is_404(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    body = assert_problem(await client.post("/v1/runs", json={"team_id": "nobody", "task": "x"}), 404, "team_not_found")
    assert "nobody" in body["detail"]
    assert await counts(client) == before


@pytest.mark.parametrize(
    "body",
    [
        {"task": "x"},
        {"task": "x", "team_id": "demo", "team": team()},
    ],
    ids=["neither", "both"],
)
async def test_exactly_one_of_team_id_and_team(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    before = await counts(client)
    problem = assert_problem(await client.post("/v1/runs", json=body), 422, "invalid_request")
    assert problem["errors"][0]["loc"] == ["body"]
    assert "team_id" in problem["errors"][0]["msg"]
    assert await counts(client) == before


async def test_an_invalid_inline_team_names_the_field(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    r = await client.post("/v1/runs", json=run_body(team=team(members=[agent("a"), agent("b", "nope/x")])))
    assert_field_error(r, ["body", "team", "members", 1, "model"], "unknown_model")
    r = await client.post("/v1/runs", json=run_body(team=team(kind="mesh")))
    assert_field_error(r, ["body", "team", "kind"], "literal_error", code="invalid_request")
    r = await client.post("/v1/runs", json=run_body(team=team(kind="single")))
    assert_field_error(r, ["body", "team", "members"], "invalid_team")
    assert await counts(client) == before


@pytest.mark.parametrize("task", ["", "   \n\t "], ids=["empty", "whitespace"])
async def test_a_blank_task_is_422(client: httpx.AsyncClient, task: str) -> None:
    before = await counts(client)
    problem = assert_problem(await client.post("/v1/runs", json=run_body(task=task)), 422, "invalid_request")
    assert problem["errors"][0]["loc"] == ["body", "task"]
    assert await counts(client) == before


async def test_a_missing_task_is_422(client: httpx.AsyncClient) -> None:
    assert_field_error(
        await client.post("/v1/runs", json={"team_id": "demo"}), ["body", "task"], "missing", code="invalid_request"
    )


async def test_a_task_over_the_limit_is_422(limited_client: httpx.AsyncClient) -> None:
    before = await counts(limited_client)
    r = await limited_client.post("/v1/runs", json=run_body(task="x" * 51, team=single()))
    body = assert_field_error(r, ["body", "task"], "task_too_long")
    assert "50" in body["detail"]
    assert await counts(limited_client) == before
    ok = await limited_client.post("/v1/runs/wait", json=run_body(task="x" * 50, team=single()))
    assert ok.status_code == 200 and ok.json()["status"] == "succeeded"


async def test_a_body_over_the_limit_is_413(limited_client: httpx.AsyncClient) -> None:
    before = await counts(limited_client)
    big = run_body(team=single(), metadata={"pad": "x" * 2000})
    body = assert_problem(await limited_client.post("/v1/runs", json=big), 413, "payload_too_large")
    assert "1024" in body["detail"]
    assert await counts(limited_client) == before


async def test_a_streamed_body_over_the_limit_is_413(limited_client: httpx.AsyncClient) -> None:
    """A chunked body carries no Content-Length: the limit must hold while it is read."""
    before = await counts(limited_client)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"task": "hi", "team_id": "demo", "metadata": {"pad": "'
        for _ in range(4):
            yield b"x" * 512
        yield b'"}}'

    r = await limited_client.post("/v1/runs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "payload_too_large")
    assert await counts(limited_client) == before


async def test_a_timeout_over_the_maximum_is_422(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    r = await client.post("/v1/runs", json=run_body(timeout_s=3601))
    body = assert_field_error(r, ["body", "timeout_s"], "invalid_timeout")
    assert "3600" in body["detail"]
    assert_field_error(
        await client.post("/v1/runs", json=run_body(timeout_s=0)),
        ["body", "timeout_s"],
        "greater_than",
        code="invalid_request",
    )
    assert await counts(client) == before


async def test_an_unknown_conversation_is_404(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    r = await client.post("/v1/runs", json=run_body(conversation_id="conv_01JDAX3G4F6Q3C9W8R4T0M2N7B"))
    assert_problem(r, 404, "not_found")
    assert await counts(client) == before


async def test_an_unknown_if_busy_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/runs", json=run_body(if_busy="queue_jump"))
    assert_field_error(r, ["body", "if_busy"], "literal_error", code="invalid_request")


async def test_an_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/runs", json=run_body(priority=1))
    assert_field_error(r, ["body", "priority"], "extra_forbidden", code="invalid_request")


async def test_wait_refuses_bad_input_the_same_way(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    assert_problem(await client.post("/v1/runs/wait", json={"team_id": "nobody", "task": "x"}), 404, "team_not_found")
    assert_problem(
        await client.post("/v1/runs/wait", content=b"{", headers={"content-type": "application/json"}),
        400,
        "malformed_json",
    )
    assert await counts(client) == before


async def test_a_body_that_is_not_utf8_is_malformed_json(client: httpx.AsyncClient) -> None:
    before = await counts(client)
    r = await client.post(
        "/v1/runs", content=b'{"task": "\xff", "team_id": "demo"}', headers={"content-type": "application/json"}
    )
    assert_problem(r, 400, "malformed_json")
    assert await counts(client) == before


async def test_json_nested_too_deeply_or_with_a_number_too_long_is_malformed_json(client: httpx.AsyncClient) -> None:
    """Valid JSON that Python's decoder cannot read (its recursion limit, its limit on digits) is refused the
    same way as broken JSON, not as a bare `bad_request`."""
    before = await counts(client)
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"task": "x", "team_id": "demo", "n": ' + b"7" * 5000 + b"}"):
        for path in ("/v1/runs", "/v1/runs/wait", "/v1/teams"):
            r = await client.post(path, content=body, headers={"content-type": "application/json"})
            assert_problem(r, 400, "malformed_json")
    assert await counts(client) == before


# -- principals ----------------------------------------------------------------------------------


async def test_an_invalid_api_key_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/runs", headers={"authorization": "Bearer not-a-key"})
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = await client.post("/v1/runs", json=run_body(), headers={"authorization": "Bearer not-a-key"})
    assert_problem(r, 401, "unauthorized")
    assert await counts(client) == (0, 0)


async def test_another_principal_cannot_see_or_touch_a_run(app: FastAPI, client: httpx.AsyncClient) -> None:
    run = await wait_run(client, team=single())
    other = await api_key_headers(app, "mallory")
    # once any key exists, keys are required: the local principal now needs one too
    client.headers.update(await api_key_headers(app, "local"))
    assert_problem(await client.get(f"/v1/runs/{run['id']}", headers=other), 404, "not_found")
    events = await client.get(f"/v1/runs/{run['id']}/events", headers={**other, "accept": "application/json"})
    assert_problem(events, 404, "not_found")
    assert_problem(await client.post(f"/v1/runs/{run['id']}/cancel", headers=other), 404, "not_found")
    assert (await client.get("/v1/runs", headers=other)).json()["data"] == []
    conversation = f"/v1/conversations/{run['conversation_id']}"
    assert_problem(await client.get(conversation, headers=other), 404, "not_found")
    assert_problem(await client.get(f"{conversation}/messages", headers=other), 404, "not_found")
    assert (await client.get("/v1/conversations", headers=other)).json()["data"] == []
    r = await client.post("/v1/runs", json=run_body(conversation_id=run["conversation_id"]), headers=other)
    assert_problem(r, 404, "not_found")
    # the seeded team belongs to the local principal
    r = await client.post("/v1/runs", json={"team_id": "demo", "task": "x"}, headers=other)
    assert_problem(r, 404, "team_not_found")
    assert await counts(client) == (1, 1)


async def test_a_principal_with_a_key_runs_in_its_own_space(app: FastAPI, client: httpx.AsyncClient) -> None:
    mine = await api_key_headers(app, "alice")
    # once any key exists, keys are required: the local principal now needs one too
    client.headers.update(await api_key_headers(app, "local"))
    r = await client.post("/v1/runs/wait", json=run_body(team=single()), headers=mine)
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "succeeded"
    assert [x["id"] for x in (await client.get("/v1/runs", headers=mine)).json()["data"]] == [run["id"]]
    assert (await client.get("/v1/runs")).json()["data"] == []
    assert_problem(await client.get(f"/v1/runs/{run['id']}"), 404, "not_found")
