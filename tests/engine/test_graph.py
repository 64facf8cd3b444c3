"""Graph teams: conditional edges, fan-out and fan-in, and the 422s of a bad graph."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.problems import assert_problem
from tests.fixtures.runs import stored_events, wait_run
from tests.fixtures.specs import agent


def graph(members: list[dict[str, Any]], edges: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": "flow", "kind": "graph", "members": members, "edges": edges, **extra}


async def speakers(client: httpx.AsyncClient, spec: dict[str, Any]) -> list[str]:
    run = await wait_run(client, expect="succeeded", team=spec)
    return [e["data"]["agent"] for e in await stored_events(client, run["id"]) if e["type"] == "message.completed"]


async def test_a_conditional_edge_takes_the_branch_the_message_names(client: httpx.AsyncClient) -> None:
    members = [
        agent("router", "fake/t3", model_options={"script": [{"text": "This is a BILLING question."}]}),
        agent("billing", "fake/t3"),
        agent("tech", "fake/t3"),
    ]
    edges = [
        {"source": "router", "target": "billing", "condition": "BILLING"},
        {"source": "router", "target": "tech", "condition": "TECH"},
    ]
    assert await speakers(client, graph(members, edges)) == ["user", "router", "billing"]
    members[0] = agent("router", "fake/t3", model_options={"script": [{"text": "A TECH matter."}]})
    assert await speakers(client, graph(members, edges)) == ["user", "router", "tech"]


async def test_fan_out_then_fan_in(client: httpx.AsyncClient) -> None:
    members = [agent(n, "fake/t3") for n in ("plan", "left", "right", "merge")]
    edges = [
        {"source": "plan", "target": "left"},
        {"source": "plan", "target": "right"},
        {"source": "left", "target": "merge"},
        {"source": "right", "target": "merge"},
    ]
    spoke = await speakers(client, graph(members, edges))
    assert spoke[:2] == ["user", "plan"]
    assert sorted(spoke[2:4]) == ["left", "right"]
    assert spoke[4:] == ["merge"]  # once, after both branches


async def test_bad_graphs_are_refused_naming_the_node(client: httpx.AsyncClient) -> None:
    two = [agent("a"), agent("b")]
    r = await client.post("/v1/teams", json=graph(two, [{"source": "a", "target": "ghost"}]))
    assert_problem(r, 422, "unknown_node")
    assert r.json()["errors"][0]["loc"] == ["body", "edges", 0, "target"]
    assert "ghost" in r.json()["detail"]

    r = await client.post(
        "/v1/teams", json=graph(two, [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}])
    )
    assert_problem(r, 422, "no_start_node")

    three = [agent("a"), agent("b"), agent("c")]
    r = await client.post(
        "/v1/teams", json=graph(three, [{"source": "a", "target": "b"}, {"source": "c", "target": "c"}])
    )
    assert_problem(r, 422, "unreachable_node")
    assert ["body", "members", 2] in [e["loc"] for e in r.json()["errors"]]

    mixed = [{"source": "a", "target": "b", "condition": "yes"}, {"source": "a", "target": "c"}]
    r = await client.post("/v1/teams", json=graph(three, mixed))
    assert_problem(r, 422, "invalid_graph")

    r = await client.post(
        "/v1/teams", json={**graph(two, []), "kind": "round_robin", "edges": [{"source": "a", "target": "b"}]}
    )
    assert_problem(r, 422, "invalid_team")
    ok = await client.post("/v1/teams", json=graph(two, [{"source": "a", "target": "b"}]))
    assert ok.status_code == 201, ok.text
