"""Everything belongs to a principal: another one gets 404 on every route and sees nothing in lists.

The route table is walked, so a new `/v1` route with a path parameter fails here until it is
covered. Analytics is left to its own tests.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import LiveServer, asgi_client
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_problem
from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, run_body, team
from tests.security.conftest import KeyedWs, create_key_async

# valid bodies, so that validation cannot answer before ownership does
BODIES: dict[str, Any] = {
    "replace_agent": agent("renamed"),
    "replace_team": team("renamed"),
    "provide_run_input": {"request_id": "r1", "content": "hello"},
    "cancel_run": None,
}
SKIP_PREFIXES = ("/v1/analytics",)


def asking_team() -> dict[str, Any]:
    return team("asking", members=[agent("helper", "fake/t3"), {"name": "human", "kind": "user_proxy"}], max_messages=4)


async def alice_world(client: httpx.AsyncClient, alice: dict[str, str]) -> dict[str, str]:
    """An agent, a team, a finished run and a run waiting for input, all Alice's."""
    made_agent = (await client.post("/v1/agents", json=agent("scout"), headers=alice)).json()
    made_team = (await client.post("/v1/teams", json=team("alice_team", model="fake/t3"), headers=alice)).json()
    done = await client.post("/v1/runs/wait", json={"team_id": made_team["id"], "task": "secret plans"}, headers=alice)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    waiting = (await client.post("/v1/runs", json=run_body(team=asking_team()), headers=alice)).json()
    await wait_for_status(_as(client, alice), waiting["id"], {"awaiting_input"})
    return {
        "agent_id": made_agent["id"],
        "team_id": made_team["id"],
        "team_name": made_team["name"],
        "conversation_id": done.json()["conversation_id"],
        "run_id": done.json()["id"],
        "waiting_run_id": waiting["id"],
    }


def _as(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.AsyncClient:
    client.headers.update(headers)
    return client


def v1_operations(app: FastAPI) -> list[tuple[str, str, str, bool]]:
    """(method, path, operationId, has a body) of every documented `/v1` operation."""
    return [
        (method.upper(), path, operation["operationId"], "requestBody" in operation)
        for path, item in app.openapi()["paths"].items()
        if path.startswith("/v1/") and not path.startswith(SKIP_PREFIXES)
        for method, operation in item.items()
    ]


async def test_every_route_with_an_id_is_404_for_another_principal(app: FastAPI) -> None:
    async with asgi_client(app) as alice_client, asgi_client(app) as bob_client:
        alice = await api_key_headers(app, "alice")
        bob = await api_key_headers(app, "bob")
        world = await alice_world(alice_client, alice)
        before = await snapshot(alice_client, alice, world)
        checked: list[str] = []
        for method, template, name, has_body in v1_operations(app):
            params = set(re.findall(r"{(\w+)}", template))
            if not params:
                continue
            unknown = params - world.keys()
            assert not unknown, f"{template} has path parameters this test does not know: {unknown}"
            assert name in BODIES or not has_body, f"add a valid body for {name}"
            for run_key in ("run_id", "waiting_run_id") if "run_id" in params else (None,):
                values = {p: world[p] for p in params}
                if run_key:
                    values["run_id"] = world[run_key]
                path = template.format(**values)
                for headers in ({}, {"accept": "application/json"}, {"last-event-id": "1"}):
                    r = await bob_client.request(method, path, json=BODIES.get(name), headers={**bob, **headers})
                    assert_problem(r, 404, r.json().get("code", "not_found"))
                    assert r.json()["code"] in ("not_found", "team_not_found"), r.text
                    # the problem never echoes anything of the resource beyond the id asked for
                    assert "secret plans" not in r.text and "scout" not in r.text
                checked.append(f"{method} {template}")
        # named, not only by id
        assert_problem(await bob_client.get(f"/v1/teams/{world['team_name']}", headers=bob), 404, "team_not_found")
        assert {"GET /v1/runs/{run_id}/events", "POST /v1/runs/{run_id}/input", "DELETE /v1/agents/{agent_id}"} <= set(
            checked
        )
        # nothing Bob tried changed anything of Alice's
        assert await snapshot(alice_client, alice, world) == before


async def snapshot(client: httpx.AsyncClient, headers: dict[str, str], world: dict[str, str]) -> list[Any]:
    paths = [
        f"/v1/agents/{world['agent_id']}",
        f"/v1/teams/{world['team_id']}",
        f"/v1/runs/{world['run_id']}",
        f"/v1/runs/{world['waiting_run_id']}",
        f"/v1/conversations/{world['conversation_id']}/messages",
    ]
    out = []
    for path in paths:
        r = await client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


async def test_lists_filters_and_references_show_nothing_of_another_principal(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        alice = await api_key_headers(app, "alice")
        bob = await api_key_headers(app, "bob")
        world = await alice_world(client, alice)
        for path in (
            "/v1/agents",
            "/v1/teams",
            "/v1/conversations",
            "/v1/runs",
            f"/v1/runs?conversation_id={world['conversation_id']}",
            f"/v1/runs?team_id={world['team_id']}",
            "/v1/runs?status=awaiting_input",
        ):
            r = await client.get(path, headers=bob)
            assert r.status_code == 200 and r.json()["data"] == [], (path, r.text)
            assert (await client.get(path, headers=alice)).json()["data"] or "status=" in path or "team_id" in path
        # Bob cannot build on Alice's things: her team, her conversation, her stored agent
        r = await client.post("/v1/runs", json={"team_id": world["team_id"], "task": "x"}, headers=bob)
        assert_problem(r, 404, "team_not_found")
        r = await client.post("/v1/runs", json=run_body(conversation_id=world["conversation_id"]), headers=bob)
        assert_problem(r, 404, "not_found")
        r = await client.post("/v1/teams", json=team("t", kind="single", members=["scout"]), headers=bob)
        assert r.status_code == 422 and r.json()["errors"][0]["type"] == "unknown_agent"
        # the same names are free for Bob: uniqueness is per principal, and reveals nothing
        assert (await client.post("/v1/agents", json=agent("scout"), headers=bob)).status_code == 201
        assert (await client.post("/v1/teams", json=team("alice_team"), headers=bob)).status_code == 201
        # and the open server's data (the demo team, `local`) is not Bob's either
        assert_problem(await client.get("/v1/teams/demo", headers=bob), 404, "team_not_found")


@pytest.mark.e2e
async def test_sse_resume_and_ws_subscribe_of_another_principals_run_are_refused(live_server: LiveServer) -> None:
    url = live_server.services.settings.database_url
    alice = await create_key_async(url, "alice")
    bob = await create_key_async(url, "bob")  # one at a time: CliRunner swaps sys.stdout
    async with live_server.client() as client:
        run = (await client.post("/v1/runs", json=run_body(team=team(model="fake/t200-d5")), headers=alice)).json()
        # SSE: replay, resume by header and by query, while the run is live
        for headers, query in (({}, ""), ({"last-event-id": "2"}, ""), ({}, "?after=1")):
            r = await client.get(f"/v1/runs/{run['id']}/events{query}", headers={**bob, **headers})
            assert_problem(r, 404, "not_found")
        async with (
            KeyedWs(live_server.url, bob) as bob_ws,
            KeyedWs(live_server.url, alice) as alice_ws,
        ):
            for frame in (
                {"type": "subscribe", "run_id": run["id"], "after": 0},
                {"type": "subscribe", "run_id": run["id"], "after": 3},
                {"type": "cancel", "run_id": run["id"]},
                {"type": "input", "run_id": run["id"], "request_id": "r", "content": "x"},
                {"type": "run.start", **run_body(conversation_id=run["conversation_id"])},
            ):
                reply = await bob_ws.reply_to({**frame, "id": frame["type"]})
                assert reply["type"] == "error" and reply["code"] == "not_found", reply
            ack = await alice_ws.reply_to({"type": "subscribe", "id": "a", "run_id": run["id"], "after": 0})
            assert ack["type"] == "ack"
            await alice_ws.until(lambda f: f.get("type") == "subscription.ended")
            await bob_ws.reply_to({"type": "ping", "id": "last"})
            assert not [f for f in bob_ws.frames if f.get("run_id") == run["id"]], "Bob received Alice's events"
        final = (await client.get(f"/v1/runs/{run['id']}", headers=alice)).json()
        assert final["status"] == "succeeded"  # Bob's cancel did nothing
