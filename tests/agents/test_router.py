"""`/v1/agents`: CRUD, cursor pagination, and the 422/409 problems a bad spec gets."""

from __future__ import annotations

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
from tests.fixtures.specs import agent


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def count_agents(client: httpx.AsyncClient) -> int:
    r = await client.get("/v1/agents", params={"limit": 200})
    assert r.status_code == 200
    return len(r.json()["data"])


# -- CRUD ----------------------------------------------------------------------------------------


async def test_create_returns_201_with_the_stored_spec(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/agents",
        json=agent("writer", "fake/t8", description="Writes.", system_message="Be brief.", tools=["calculator"]),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("agt_")
    assert body["object"] == "agent"
    assert body["name"] == "writer"
    assert body["model"] == "fake/t8"
    assert body["description"] == "Writes."
    assert body["system_message"] == "Be brief."
    assert body["tools"] == ["calculator"]
    assert body["kind"] == "assistant"
    assert body["streaming"] is True
    assert body["created_at"] and body["updated_at"]


async def test_get_returns_what_create_returned(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/agents", json=agent("reader", "fake/t3"))).json()
    r = await client.get(f"/v1/agents/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created


async def test_an_agent_without_a_model_is_stored_without_one(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json={"name": "plain"})
    assert r.status_code == 201, r.text
    assert r.json()["model"] is None


async def test_list_pages_through_every_agent_newest_first(client: httpx.AsyncClient) -> None:
    created = []
    for i in range(5):
        r = await client.post("/v1/agents", json=agent(f"a{i}"))
        assert r.status_code == 201
        created.append(r.json()["id"])

    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/v1/agents", params=params)
        assert r.status_code == 200
        page = r.json()
        pages += 1
        assert len(page["data"]) <= 2
        seen.extend(a["id"] for a in page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
        assert pages < 10
    assert pages == 3
    assert seen == list(reversed(created))


async def test_list_with_a_limit_that_fits_all_has_no_next_cursor(client: httpx.AsyncClient) -> None:
    for i in range(2):
        await client.post("/v1/agents", json=agent(f"b{i}"))
    page = (await client.get("/v1/agents", params={"limit": 2})).json()
    assert len(page["data"]) == 2
    assert page.get("next_cursor") is None


async def test_list_rejects_a_cursor_it_did_not_issue(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/agents", params={"cursor": "%%%not-base64\xff"})
    assert_problem(r, 400, "invalid_cursor")


async def test_list_rejects_a_limit_out_of_range(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/agents", params={"limit": 0})
    body = assert_problem(r, 422, "invalid_request")
    assert body["errors"][0]["loc"] == ["query", "limit"]


async def test_replace_changes_the_spec_and_keeps_the_id(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/agents", json=agent("draft", "fake/t3"))).json()
    r = await client.put(
        f"/v1/agents/{created['id']}", json=agent("final", "fake/t5", system_message="New instructions.")
    )
    assert r.status_code == 200, r.text
    replaced = r.json()
    assert replaced["id"] == created["id"]
    assert replaced["name"] == "final"
    assert replaced["model"] == "fake/t5"
    assert replaced["system_message"] == "New instructions."
    assert replaced["created_at"] == created["created_at"]
    assert parse_time(replaced["updated_at"]) > parse_time(created["updated_at"])
    fetched = (await client.get(f"/v1/agents/{created['id']}")).json()
    assert fetched["name"] == "final" and fetched["model"] == "fake/t5"


async def test_replace_of_an_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/agents/agt_nope", json=agent("x"))
    assert_problem(r, 404, "not_found")


async def test_replace_validates_the_new_spec(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/agents", json=agent("keeper", "fake/t3"))).json()
    r = await client.put(f"/v1/agents/{created['id']}", json=agent("keeper", "nope/x"))
    assert_field_error(r, ["body", "model"], "unknown_model")
    assert (await client.get(f"/v1/agents/{created['id']}")).json()["model"] == "fake/t3"


async def test_replace_onto_another_agents_name_is_409(client: httpx.AsyncClient) -> None:
    await client.post("/v1/agents", json=agent("taken"))
    other = (await client.post("/v1/agents", json=agent("other"))).json()
    r = await client.put(f"/v1/agents/{other['id']}", json=agent("taken"))
    assert_problem(r, 409, "already_exists")
    assert (await client.get(f"/v1/agents/{other['id']}")).json()["name"] == "other"


async def test_delete_is_204_then_the_agent_is_gone(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/agents", json=agent("doomed"))).json()
    r = await client.delete(f"/v1/agents/{created['id']}")
    assert r.status_code == 204
    assert r.content == b""
    assert_problem(await client.get(f"/v1/agents/{created['id']}"), 404, "not_found")
    assert_problem(await client.delete(f"/v1/agents/{created['id']}"), 404, "not_found")
    assert await count_agents(client) == 0


async def test_get_of_an_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/agents/agt_missing"), 404, "not_found")
    assert body["instance"] == "/v1/agents/agt_missing"


async def test_a_deleted_name_can_be_used_again(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/agents", json=agent("reused"))).json()
    await client.delete(f"/v1/agents/{first['id']}")
    r = await client.post("/v1/agents", json=agent("reused"))
    assert r.status_code == 201
    assert r.json()["id"] != first["id"]


# -- validation ----------------------------------------------------------------------------------


async def test_duplicate_name_is_409_already_exists(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/agents", json=agent("twin"))).status_code == 201
    r = await client.post("/v1/agents", json=agent("twin", "fake/t3"))
    assert_problem(r, 409, "already_exists")
    assert await count_agents(client) == 1


async def test_unknown_model_provider_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", "nope/x"))
    body = assert_field_error(r, ["body", "model"], "unknown_model")
    assert "nope" in body["errors"][0]["msg"]
    assert await count_agents(client) == 0


async def test_model_without_a_provider_prefix_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", "gpt-4o"))
    assert_field_error(r, ["body", "model"], "unknown_model")


async def test_bad_fake_variant_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", "fake/zzz"))
    body = assert_field_error(r, ["body", "model"], "unknown_model")
    assert "zzz" in body["errors"][0]["msg"]


async def test_unconfigured_provider_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", "openai/gpt-4o-mini"))
    body = assert_field_error(r, ["body", "model"], "unknown_model")
    assert "not configured" in body["errors"][0]["msg"]


async def test_unknown_tool_is_422_at_its_index(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", tools=["calculator", "rm_rf"]))
    body = assert_field_error(r, ["body", "tools", 1], "unknown_tool")
    assert "rm_rf" in body["errors"][0]["msg"]
    assert all(e["loc"] != ["body", "tools", 0] for e in body["errors"])


async def test_reserved_name_user_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("user"))
    assert_field_error(r, ["body", "name"], "reserved_name")
    assert await count_agents(client) == 0


@pytest.mark.parametrize("name", ["has space", "1starts_with_digit", "dash-ed", "", "x" * 65])
async def test_name_must_be_an_identifier(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post("/v1/agents", json=agent(name))
    assert_field_error(r, ["body", "name"], "string_pattern_mismatch", code="invalid_request")


async def test_missing_name_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json={"model": "fake/t3"})
    assert_field_error(r, ["body", "name"], "missing", code="invalid_request")


async def test_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", code="import os"))
    assert_field_error(r, ["body", "code"], "extra_forbidden", code="invalid_request")


async def test_several_errors_are_all_reported(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("user", "nope/x", tools=["nothing"]))
    body = assert_problem(r, 422, "reserved_name")
    locs = [e["loc"] for e in body["errors"]]
    assert ["body", "name"] in locs
    assert ["body", "model"] in locs
    assert ["body", "tools", 0] in locs


async def test_a_script_with_a_fake_model_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("scripted", "fake/t3", model_options={"script": [{"text": "hi"}]}))
    assert r.status_code == 201, r.text
    assert r.json()["model_options"]["script"][0]["text"] == "hi"


@pytest.fixture
async def openai_client(backend: Backend, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A server with an OpenAI key configured (never called: only validation runs)."""
    async with serve_app(backend.settings(tmp_path, openai_api_key="sk-test-not-a-real-key")) as (_, c):
        yield c


async def test_a_script_with_a_non_fake_model_is_422(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.post(
        "/v1/agents",
        json=agent("scripted", "openai/gpt-4o-mini", model_options={"script": [{"text": "hi"}]}),
    )
    assert_field_error(r, ["body", "model_options", "script"], "invalid_spec")
    assert await count_agents(openai_client) == 0


async def test_a_script_with_the_default_model_when_it_is_not_fake_is_422(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.post("/v1/agents", json={"name": "scripted", "model_options": {"script": [{"text": "x"}]}})
    assert_field_error(r, ["body", "model_options", "script"], "invalid_spec")


async def test_a_configured_provider_is_accepted(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.post("/v1/agents", json=agent("real", "openai/gpt-4o-mini"))
    assert r.status_code == 201, r.text
    assert "sk-test" not in r.text


async def test_out_of_range_model_option_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("a", model_options={"temperature": 5}))
    assert_field_error(r, ["body", "model_options", "temperature"], "less_than_equal", code="invalid_request")


# -- principals ----------------------------------------------------------------------------------


async def test_agents_belong_to_their_principal(app: FastAPI, client: httpx.AsyncClient) -> None:
    mine = (await client.post("/v1/agents", json=agent("shared"))).json()
    other = await api_key_headers(app, "mallory")
    # once any key exists, keys are required: the local principal now needs one too
    client.headers.update(await api_key_headers(app, "local"))
    assert_problem(await client.get(f"/v1/agents/{mine['id']}", headers=other), 404, "not_found")
    assert_problem(await client.put(f"/v1/agents/{mine['id']}", json=agent("x"), headers=other), 404, "not_found")
    assert_problem(await client.delete(f"/v1/agents/{mine['id']}", headers=other), 404, "not_found")
    assert (await client.get("/v1/agents", headers=other)).json()["data"] == []
    # names are unique per principal, not across them
    theirs = await client.post("/v1/agents", json=agent("shared"), headers=other)
    assert theirs.status_code == 201
    assert [a["id"] for a in (await client.get("/v1/agents")).json()["data"]] == [mine["id"]]
    assert (await client.get(f"/v1/agents/{mine['id']}")).json() == mine
