"""The one rendering of HTTP errors: a method a path does not take names every method it does."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.problems import assert_problem


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        # a collection: listed and created by two routes, the first of which Starlette alone would name
        ("/v1/agents", "GET, POST"),
        ("/v1/teams", "GET, POST"),
        ("/v1/runs", "GET, POST"),
        ("/v1/teams/team_x", "GET, PUT, DELETE"),
        ("/v1/runs/run_x/events", "GET"),
        ("/v1/runs/run_x/cancel", "POST"),
    ],
)
async def test_a_405_allows_every_method_the_path_takes(client: httpx.AsyncClient, path: str, allowed: str) -> None:
    for method in ("PATCH", "DELETE", "PUT", "POST", "GET"):
        if method in allowed.split(", "):
            continue
        r = await client.request(method, path)
        assert_problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allowed, (method, path)
        # and each method it names is one the path really takes
        for named in allowed.split(", "):
            assert (await client.request(named, path)).status_code != 405, (named, path)
