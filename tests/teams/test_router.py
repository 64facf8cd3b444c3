"""`/v1/teams`: CRUD (by id and by name), the seeded `demo` team, and spec validation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.specs import agent, team


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/v1/teams", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def team_names(client: httpx.AsyncClient) -> list[str]:
    r = await client.get("/v1/teams", params={"limit": 200})
    assert r.status_code == 200
    return [t["name"] for t in r.json()["data"]]


# -- the seed ------------------------------------------------------------------------------------


async def test_a_fresh_server_has_the_demo_team_with_two_members(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/teams/demo")
    assert r.status_code == 200, r.text
    demo = r.json()
    assert demo["name"] == "demo"
    assert demo["id"].startswith("team_")
    assert demo["kind"] == "round_robin"
    assert [m["name"] for m in demo["members"]] == ["writer", "critic"]
    assert demo["termination"]["max_messages"] == 5
    assert await team_names(client) == ["demo"]


async def test_the_demo_team_is_readable_by_id_too(client: httpx.AsyncClient) -> None:
    demo = (await client.get("/v1/teams/demo")).json()
    r = await client.get(f"/v1/teams/{demo['id']}")
    assert r.status_code == 200
    assert r.json() == demo


# -- CRUD ----------------------------------------------------------------------------------------


async def test_create_returns_201_and_get_by_id_and_by_name_agree(client: httpx.AsyncClient) -> None:
    created = await create(client, team("pair", model="fake/t3", description="Two of them."))
    assert created["id"].startswith("team_")
    assert created["object"] == "team"
    assert created["kind"] == "round_robin"
    assert created["description"] == "Two of them."
    assert [m["name"] for m in created["members"]] == ["writer", "critic"]
    assert created["members"][0]["model"] == "fake/t3"
    assert created["termination"] == {
        "max_messages": 3,
        "text_mention": None,
        "timeout_s": None,
        "token_budget": None,
    }
    by_id = await client.get(f"/v1/teams/{created['id']}")
    by_name = await client.get("/v1/teams/pair")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json() == by_name.json() == created


async def test_every_kind_can_be_created(client: httpx.AsyncClient) -> None:
    await create(client, team("rr", kind="round_robin"))
    await create(client, team("sel", kind="selector", selector_model="fake/default"))
    await create(client, team("one", kind="single", members=[agent("solo")]))
    swarm_members = [agent("triage", handoffs=["expert"]), agent("expert", handoffs=["triage"])]
    swarm = await create(client, team("sw", kind="swarm", members=swarm_members))
    assert swarm["members"][0]["handoffs"] == ["expert"]
    assert sorted(await team_names(client)) == ["demo", "one", "rr", "sel", "sw"]


async def test_list_pages_through_every_team_newest_first(client: httpx.AsyncClient) -> None:
    created = [(await create(client, team(f"t{i}")))["id"] for i in range(4)]
    demo_id = (await client.get("/v1/teams/demo")).json()["id"]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/teams", params=params)).json()
        pages += 1
        assert 1 <= len(page["data"]) <= 2
        seen.extend(t["id"] for t in page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
        assert pages < 10
    assert pages == 3
    assert seen == [*reversed(created), demo_id]


async def test_replace_by_name_changes_the_spec_and_keeps_the_id(client: httpx.AsyncClient) -> None:
    created = await create(client, team("draft"))
    r = await client.put("/v1/teams/draft", json=team("final", kind="single", members=[agent("solo", "fake/t2")]))
    assert r.status_code == 200, r.text
    replaced = r.json()
    assert replaced["id"] == created["id"]
    assert replaced["name"] == "final" and replaced["kind"] == "single"
    assert datetime.fromisoformat(replaced["updated_at"]) > datetime.fromisoformat(created["updated_at"])
    assert_problem(await client.get("/v1/teams/draft"), 404, "team_not_found")
    assert (await client.get(f"/v1/teams/{created['id']}")).json()["name"] == "final"


async def test_replace_validates_the_new_spec_and_keeps_the_old(client: httpx.AsyncClient) -> None:
    created = await create(client, team("steady"))
    r = await client.put(f"/v1/teams/{created['id']}", json=team("steady", model="nope/x"))
    assert_field_error(r, ["body", "members", 0, "model"], "unknown_model")
    assert (await client.get("/v1/teams/steady")).json() == created


async def test_replace_onto_another_teams_name_is_409(client: httpx.AsyncClient) -> None:
    created = await create(client, team("mine"))
    r = await client.put(f"/v1/teams/{created['id']}", json=team("demo"))
    assert_problem(r, 409, "already_exists")
    assert (await client.get(f"/v1/teams/{created['id']}")).json()["name"] == "mine"


async def test_replace_of_an_unknown_team_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/v1/teams/team_nope", json=team("x")), 404, "team_not_found")


async def test_delete_is_204_then_404(client: httpx.AsyncClient) -> None:
    created = await create(client, team("doomed"))
    r = await client.delete(f"/v1/teams/{created['id']}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(await client.get(f"/v1/teams/{created['id']}"), 404, "team_not_found")
    assert_problem(await client.get("/v1/teams/doomed"), 404, "team_not_found")
    assert_problem(await client.delete(f"/v1/teams/{created['id']}"), 404, "team_not_found")
    assert await team_names(client) == ["demo"]


async def test_delete_by_name(client: httpx.AsyncClient) -> None:
    await create(client, team("byname"))
    assert (await client.delete("/v1/teams/byname")).status_code == 204
    assert "byname" not in await team_names(client)


async def test_get_of_an_unknown_team_is_404(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/teams/nobody"), 404, "team_not_found")
    assert "nobody" in body["detail"]


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/teams", json=team("demo")), 409, "already_exists")
    await create(client, team("dup"))
    assert_problem(await client.post("/v1/teams", json=team("dup", model="fake/t2")), 409, "already_exists")
    assert sorted(await team_names(client)) == ["demo", "dup"]


# -- stored agents as members --------------------------------------------------------------------


async def test_a_stored_agent_named_as_a_member_resolves(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("helper", "fake/t3"))
    assert r.status_code == 201
    created = await create(client, team("mixed", members=["helper", agent("inline", "fake/t2")]))
    # the stored spec keeps the reference; it is resolved when a run starts
    assert created["members"][0] == "helper"
    assert created["members"][1]["name"] == "inline"
    assert (await client.get("/v1/teams/mixed")).json()["members"][0] == "helper"


async def test_a_stored_agent_that_does_not_exist_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("ghosts", members=["ghost", agent("real")]))
    body = assert_field_error(r, ["body", "members", 0], "unknown_agent")
    assert "ghost" in body["errors"][0]["msg"]
    assert "ghosts" not in await team_names(client)


async def test_a_stored_agent_is_validated_as_a_member(client: httpx.AsyncClient) -> None:
    # a swarm-style agent with hand-offs is fine on its own, not in a round-robin team
    r = await client.post("/v1/agents", json=agent("router", handoffs=["other"]))
    assert r.status_code == 201
    r = await client.post("/v1/teams", json=team("rr", members=["router", agent("other")]))
    assert_field_error(r, ["body", "members", 0, "handoffs", 0], "invalid_handoff")


# -- validation ----------------------------------------------------------------------------------


async def test_unknown_model_in_a_member_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("bad", members=[agent("a", "nope/x"), agent("b")]))
    assert_field_error(r, ["body", "members", 0, "model"], "unknown_model")
    assert "bad" not in await team_names(client)


async def test_unknown_model_in_the_second_member_names_it(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("bad", members=[agent("a"), agent("b", "fake/zzz")]))
    body = assert_field_error(r, ["body", "members", 1, "model"], "unknown_model")
    assert all(e["loc"][:3] != ["body", "members", 0] for e in body["errors"])


async def test_unknown_tool_in_a_member_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("bad", members=[agent("a"), agent("b", tools=["shell"])]))
    assert_field_error(r, ["body", "members", 1, "tools", 0], "unknown_tool")


async def test_reserved_member_name_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("bad", members=[agent("user"), agent("b")]))
    assert_field_error(r, ["body", "members", 0, "name"], "reserved_name")


async def test_a_selector_team_of_one_member_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("sel", kind="selector", members=[agent("only")]))
    assert_field_error(r, ["body", "members"], "invalid_team")


async def test_a_single_team_with_two_members_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("one", kind="single"))
    assert_field_error(r, ["body", "members"], "invalid_team")


async def test_a_team_without_members_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("empty", members=[]))
    assert_field_error(r, ["body", "members"], "too_short", code="invalid_request")


async def test_an_unknown_kind_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("odd", kind="mesh"))
    assert_field_error(r, ["body", "kind"], "literal_error", code="invalid_request")


async def test_an_invalid_team_name_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("no spaces"))
    assert_field_error(r, ["body", "name"], "string_pattern_mismatch", code="invalid_request")


async def test_a_hand_off_to_an_agent_not_in_the_team_is_422(client: httpx.AsyncClient) -> None:
    members = [agent("triage", handoffs=["expert", "stranger"]), agent("expert")]
    r = await client.post("/v1/teams", json=team("sw", kind="swarm", members=members))
    body = assert_field_error(r, ["body", "members", 0, "handoffs", 1], "unknown_handoff_target")
    assert "stranger" in body["errors"][0]["msg"]
    assert all(e["loc"] != ["body", "members", 0, "handoffs", 0] for e in body["errors"])


async def test_a_hand_off_to_itself_is_422(client: httpx.AsyncClient) -> None:
    members = [agent("triage", handoffs=["triage"]), agent("expert")]
    r = await client.post("/v1/teams", json=team("sw", kind="swarm", members=members))
    assert_field_error(r, ["body", "members", 0, "handoffs", 0], "invalid_handoff")


@pytest.mark.parametrize("kind", ["round_robin", "selector"])
async def test_hand_offs_on_a_non_swarm_team_are_422(client: httpx.AsyncClient, kind: str) -> None:
    members = [agent("a"), agent("b", handoffs=["a"])]
    r = await client.post("/v1/teams", json=team("nonswarm", kind=kind, members=members))
    body = assert_field_error(r, ["body", "members", 1, "handoffs", 0], "invalid_handoff")
    assert "swarm" in body["errors"][0]["msg"]


async def test_duplicate_member_names_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("twins", members=[agent("same"), agent("same", "fake/t2")]))
    assert_field_error(r, ["body", "members", 1, "name"], "duplicate_member")


async def test_a_stored_agent_and_an_inline_one_with_the_same_name_are_duplicates(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/agents", json=agent("helper"))).status_code == 201
    r = await client.post("/v1/teams", json=team("twins", members=["helper", agent("helper")]))
    assert_field_error(r, ["body", "members", 1, "name"], "duplicate_member")


async def test_a_selector_prompt_without_history_is_422(client: httpx.AsyncClient) -> None:
    prompt = "Roles: {roles}. Pick one of {participants}."
    r = await client.post("/v1/teams", json=team("sel", kind="selector", selector_prompt=prompt))
    body = assert_field_error(r, ["body", "selector_prompt"], "invalid_spec")
    assert "{history}" in body["errors"][0]["msg"]


async def test_a_selector_prompt_with_every_field_is_accepted(client: httpx.AsyncClient) -> None:
    prompt = "Roles: {roles}. History: {history}. Pick one of {participants}."
    created = await create(client, team("sel", kind="selector", selector_prompt=prompt))
    assert created["selector_prompt"] == prompt


async def test_an_unknown_selector_model_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("sel", kind="selector", selector_model="nope/x"))
    assert_field_error(r, ["body", "selector_model"], "unknown_model")


async def test_selector_settings_on_another_kind_are_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("rr", selector_model="fake/default"))
    assert_field_error(r, ["body", "kind"], "invalid_team")


async def test_a_bad_termination_value_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/teams", json=team("bad", max_messages=None, termination={"max_messages": 0}))
    assert_field_error(r, ["body", "termination", "max_messages"], "greater_than_equal", code="invalid_request")


# -- principals ----------------------------------------------------------------------------------


async def test_teams_and_their_agent_references_belong_to_their_principal(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/v1/agents", json=agent("helper"))).status_code == 201
    other = await api_key_headers(app, "mallory")
    # once any key exists, keys are required: the local principal now needs one too
    client.headers.update(await api_key_headers(app, "local"))
    assert_problem(await client.get("/v1/teams/demo", headers=other), 404, "team_not_found")
    assert_problem(await client.delete("/v1/teams/demo", headers=other), 404, "team_not_found")
    assert (await client.get("/v1/teams", headers=other)).json()["data"] == []
    # another principal's stored agent is not there to be named
    r = await client.post("/v1/teams", json=team("t", kind="single", members=["helper"]), headers=other)
    assert_field_error(r, ["body", "members", 0], "unknown_agent")
    # and a team name is unique per principal only
    assert (await client.post("/v1/teams", json=team("demo"), headers=other)).status_code == 201
    assert len((await client.get("/v1/teams/demo")).json()["members"]) == 2
