"""`/v1/conversations`: the threads runs leave behind, and their messages in order."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.problems import assert_problem
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent, run_body, team

MISSING = "conv_01JDAX3G4F6Q3C9W8R4T0M2N7B"


def single(name: str = "solo") -> dict[str, Any]:
    return team("one", kind="single", members=[agent(name, "fake/t4")], max_messages=None)


async def messages_of(client: httpx.AsyncClient, conversation_id: str, **params: Any) -> dict[str, Any]:
    r = await client.get(f"/v1/conversations/{conversation_id}/messages", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_fresh_server_has_no_conversations(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/conversations")
    assert r.status_code == 200
    assert r.json()["data"] == []


async def test_each_run_without_a_conversation_starts_one_and_the_list_shows_them_newest_first(
    client: httpx.AsyncClient,
) -> None:
    first = await wait_run(client, expect="succeeded", task="First task", team=single())
    second = await wait_run(client, expect="succeeded", task="Second task", team=single())
    assert first["conversation_id"] != second["conversation_id"]
    r = await client.get("/v1/conversations")
    assert r.status_code == 200
    listed = r.json()["data"]
    assert [c["id"] for c in listed] == [second["conversation_id"], first["conversation_id"]]
    assert [c["title"] for c in listed] == ["Second task", "First task"]
    assert all(c["object"] == "conversation" for c in listed)


async def test_list_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    ids = [
        (await wait_run(client, expect="succeeded", task=f"t{i}", team=single()))["conversation_id"] for i in range(3)
    ]
    page = (await client.get("/v1/conversations", params={"limit": 2})).json()
    assert [c["id"] for c in page["data"]] == [ids[2], ids[1]]
    rest = (await client.get("/v1/conversations", params={"limit": 2, "cursor": page["next_cursor"]})).json()
    assert [c["id"] for c in rest["data"]] == [ids[0]]
    assert rest.get("next_cursor") is None


async def test_get_shows_counts_title_and_saved_state(client: httpx.AsyncClient) -> None:
    long_task = "  " + "word " * 40
    run = await wait_run(client, expect="succeeded", task=long_task, team=team(model="fake/t3", max_messages=3))
    r = await client.get(f"/v1/conversations/{run['conversation_id']}")
    assert r.status_code == 200
    conversation = r.json()
    assert conversation["id"] == run["conversation_id"]
    assert conversation["message_count"] == 3
    assert conversation["has_state"] is True
    assert conversation["team_id"] is None
    assert conversation["title"] == long_task.strip()[:80]
    assert len(conversation["title"]) == 80


async def test_a_failed_run_leaves_no_state_to_continue_from(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/runs/wait",
        json=run_body(team=team("one", kind="single", members=[agent("x", "fake/fail")], max_messages=None)),
    )
    run = r.json()
    assert run["status"] == "failed"
    conversation = (await client.get(f"/v1/conversations/{run['conversation_id']}")).json()
    assert conversation["has_state"] is False
    assert conversation["message_count"] == 1  # only the task


async def test_a_stored_teams_conversation_names_the_team(client: httpx.AsyncClient) -> None:
    demo = (await client.get("/v1/teams/demo")).json()
    run = await wait_run(client, expect="succeeded", team_id="demo")
    conversation = (await client.get(f"/v1/conversations/{run['conversation_id']}")).json()
    assert conversation["team_id"] == demo["id"]


async def test_messages_are_in_order_from_position_one_and_start_with_the_task(client: httpx.AsyncClient) -> None:
    run = await wait_run(
        client, expect="succeeded", task="Write a haiku about rivers.", team=team(model="fake/t3", max_messages=4)
    )
    page = await messages_of(client, run["conversation_id"])
    messages = page["data"]
    assert page.get("next_after") is None
    assert [m["position"] for m in messages] == [1, 2, 3, 4]
    assert messages[0]["agent"] == "user"
    assert messages[0]["text"] == "Write a haiku about rivers."
    assert [m["agent"] for m in messages[1:]] == ["writer", "critic", "writer"]
    assert all(m["object"] == "message" for m in messages)
    assert all(m["conversation_id"] == run["conversation_id"] and m["run_id"] == run["id"] for m in messages)
    assert all(m["type"] == "TextMessage" for m in messages)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert messages[-1]["id"] == run["result"]["message_id"]
    assert messages[-1]["text"] == run["result"]["text"]
    assert all(m["usage"]["completion_tokens"] > 0 for m in messages[1:])


async def test_each_message_is_the_stored_message_completed_event(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, expect="succeeded", team=team(model="fake/t3", max_messages=3))
    messages = (await messages_of(client, run["conversation_id"]))["data"]
    events = await stored_events(client, run["id"])
    completed = {e["seq"]: e for e in events if e["type"] == "message.completed"}
    assert sorted(completed) == [m["seq"] for m in messages]
    for m in messages:
        assert completed[m["seq"]]["data"]["message_id"] == m["id"]
        assert completed[m["seq"]]["data"]["text"] == m["text"]


async def test_after_and_limit_page_through_the_messages(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, expect="succeeded", team=team(model="fake/t3", max_messages=5))
    conversation_id = run["conversation_id"]
    everything = (await messages_of(client, conversation_id))["data"]
    assert len(everything) == 5

    seen: list[dict[str, Any]] = []
    after = 0
    pages = 0
    while True:
        page = await messages_of(client, conversation_id, after=after, limit=2)
        pages += 1
        assert len(page["data"]) <= 2
        seen.extend(page["data"])
        if page.get("next_after") is None:
            break
        assert page["next_after"] == page["data"][-1]["position"]
        after = page["next_after"]
        assert pages < 10
    assert pages == 3
    assert seen == everything

    tail = await messages_of(client, conversation_id, after=3)
    assert [m["position"] for m in tail["data"]] == [4, 5]
    assert (await messages_of(client, conversation_id, after=5))["data"] == []


async def test_run_id_filters_one_runs_messages(client: httpx.AsyncClient) -> None:
    first = await wait_run(client, expect="succeeded", task="One.", team=single())
    second = await wait_run(
        client, expect="succeeded", task="Two.", team=single(), conversation_id=first["conversation_id"]
    )
    conversation_id = first["conversation_id"]

    everything = (await messages_of(client, conversation_id))["data"]
    assert [m["position"] for m in everything] == [1, 2, 3, 4]
    assert [(m["agent"], m["text"]) for m in everything if m["agent"] == "user"] == [("user", "One."), ("user", "Two.")]

    only_second = (await messages_of(client, conversation_id, run_id=second["id"]))["data"]
    assert [m["position"] for m in only_second] == [3, 4]
    assert {m["run_id"] for m in only_second} == {second["id"]}
    assert only_second[0]["text"] == "Two."

    only_first = await messages_of(client, conversation_id, run_id=first["id"], limit=1)
    assert [m["position"] for m in only_first["data"]] == [1]
    assert only_first["next_after"] == 1
    next_page = await messages_of(client, conversation_id, run_id=first["id"], after=1, limit=1)
    assert [m["position"] for m in next_page["data"]] == [2]

    assert (await messages_of(client, conversation_id, run_id="run_other"))["data"] == []
    conversation = (await client.get(f"/v1/conversations/{conversation_id}")).json()
    assert conversation["message_count"] == 4


async def test_unknown_conversation_ids_are_404(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get(f"/v1/conversations/{MISSING}"), 404, "not_found")
    assert body["instance"] == f"/v1/conversations/{MISSING}"
    assert_problem(await client.get(f"/v1/conversations/{MISSING}/messages"), 404, "not_found")


async def test_bad_paging_parameters_are_422(client: httpx.AsyncClient) -> None:
    run = await wait_run(client, expect="succeeded", team=single())
    url = f"/v1/conversations/{run['conversation_id']}/messages"
    for params, field in (({"after": -1}, "after"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit")):
        body = assert_problem(await client.get(url, params=params), 422, "invalid_request")
        assert body["errors"][0]["loc"] == ["query", field]
    assert_problem(await client.get("/v1/conversations", params={"cursor": "!!"}), 400, "invalid_cursor")
