"""AG-UI conformance, judged by a validator nobody here wrote: ``ag-ui-validate`` against a live server.

Each case runs the validator's own CLI, as a process, against ``POST /agui/teams/{team}`` of a real
uvicorn (it sends its own ``RunAgentInput``); every finding of any severity fails the test. Its JUnit
and JSON reports are kept as the suite's artifacts, under ``artifacts/ag-ui-validate/<case>/``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, make_settings, serve_app
from tests.fixtures.principals import api_key_headers
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

VALIDATOR = str(Path(sys.executable).with_name("ag-ui-validate"))

TOOL_SCRIPT = [
    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
    {"text": "It is 42."},
]
THINKING = [{"reasoning": "A river haiku: water, stone and time.", "text": "Cold water on stone."}]
TEAMS: dict[str, dict[str, Any]] = {
    "solo": team("solo", kind="single", members=[agent("writer", "fake/t8")], max_messages=None),
    "pair": team("pair", max_messages=4),
    "asking": team("asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}]),
    "solver": team(
        "solver",
        kind="single",
        members=[agent("solver", "fake/t4", tools=["calculator"], model_options={"script": TOOL_SCRIPT})],
        max_messages=None,
    ),
    # each member's model reasons first (reasoning.delta): REASONING_* events in each turn
    "thinker": team(
        "thinker",
        members=[
            agent("writer", "fake/t4", model_options={"script": THINKING}),
            agent("critic", "fake/t4", model_options={"script": THINKING}),
        ],
        max_messages=3,
    ),
}


REPORTS = Path(__file__).resolve().parents[3] / "artifacts" / "ag-ui-validate"


def validate(url: str, reports: Path, *headers: str) -> dict[str, Any]:
    """The validator's JSON report of one run of ``url``; its JUnit report is left beside it."""
    reports.mkdir(parents=True, exist_ok=True)
    args = [VALIDATOR, url, "--json-file", str(reports / "report.json"), "--junit-file", str(reports / "junit.xml")]
    for header in headers:
        args += ["--header", header]
    done = subprocess.run(
        [*args, "--fail-on", "warning", "--timeout", "30", "--no-color"], capture_output=True, text=True, timeout=60
    )
    assert (reports / "junit.xml").exists(), done.stdout + done.stderr
    report: dict[str, Any] = json.loads((reports / "report.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    return report


def findings(report: dict[str, Any]) -> list[Any]:
    """Every diagnostic, whatever its severity, and anything the validator could not check."""
    assert report["eventCount"] > 0
    return [*report["diagnostics"], *report["internalErrors"]]


async def make_teams(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    for spec in TEAMS.values():
        r = await client.post("/v1/teams", json=spec, headers=headers)
        assert r.status_code == 201, r.text


async def test_validator_finds_nothing_in_plain_multi_agent_tool_interrupted_and_reasoning_runs(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with serve_app(settings) as (_, client):
        await make_teams(client)
    with LiveServer(settings) as server:
        for name in ("solo", "pair", "solver", "asking", "thinker"):
            report = await asyncio.to_thread(validate, f"{server.url}/agui/teams/{name}", REPORTS / name)
            assert findings(report) == [], (name, report)
            tools = report["features"]["backend-tool-rendering"]
            assert tools == ("exercised" if name == "solver" else "not-exercised"), name
            person = report["features"]["human-in-the-loop"]
            assert person == ("exercised" if name == "asking" else "not-exercised"), name
        async with server.client() as client:
            runs = (await client.get("/v1/runs")).json()["data"]
            thinker = next(r["id"] for r in runs if r["team_name"] == "thinker")
            logged = (await client.get(f"/v1/runs/{thinker}/events/page")).json()["data"]
    # the stream the validator judged had the models' reasoning in it
    assert sum(e["type"] == "reasoning.delta" for e in logged) > 2
    # the validator's runs are ordinary runs of ours, one per request; the one that asks a person waits
    assert {r["team_name"]: r["status"] for r in runs} == {
        "solo": "succeeded",
        "pair": "succeeded",
        "solver": "succeeded",
        "asking": "awaiting_input",
        "thinker": "succeeded",
    }


async def test_validator_finds_nothing_on_a_server_that_requires_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_required=True)
    async with serve_app(settings) as (app, client):
        alice = await api_key_headers(app, "alice")
        await make_teams(client, alice)
    with LiveServer(settings) as server:
        url = f"{server.url}/agui/teams/pair"
        report = await asyncio.to_thread(validate, url, REPORTS / "keyed", f"Authorization: {alice['authorization']}")
        assert findings(report) == [], report
        # without the key the validator gets no stream at all: it fails as a tool, not with a clean report
        done = await asyncio.to_thread(
            subprocess.run, [VALIDATOR, url, "--no-color"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and "401" in done.stdout + done.stderr
