"""`teams list | export | import` and `run`, called as functions (Typer's runner) against real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import LiveServer, make_settings
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

runner = CliRunner()


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[LiveServer]:
    (tmp_path / "other").mkdir()
    with LiveServer(make_settings(tmp_path / "other")) as server:
        yield server


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def specs_of(url: str) -> dict[str, dict[str, Any]]:
    teams = httpx.get(f"{url}/v1/teams").json()["data"]
    return {t["name"]: {k: v for k, v in t.items() if k not in ("id", "created_at", "updated_at")} for t in teams}


def test_export_then_import_recreates_the_teams_on_another_server(
    live_server: LiveServer, other_server: LiveServer, tmp_path: Path
) -> None:
    created = httpx.post(f"{live_server.url}/v1/teams", json=team("duo", termination={"text_mention": "DONE"}))
    assert created.status_code == 201, created.text
    exported = tmp_path / "teams.json"
    code, output = invoke("teams", "export", "-o", str(exported), "--url", live_server.url)
    assert code == 0, output
    specs = json.loads(exported.read_text())
    assert sorted(s["name"] for s in specs) == ["demo", "duo"]
    assert all("id" not in s and "created_at" not in s for s in specs)

    # the other server has its own `demo`: refused without --replace, the rest is imported
    code, output = invoke("teams", "import", str(exported), "--url", other_server.url)
    assert code == 1
    assert "created duo" in output
    assert "team demo:" in output and "--replace" in output
    code, output = invoke("teams", "import", str(exported), "--replace", "--url", other_server.url)
    assert code == 0, output
    assert "replaced demo" in output and "replaced duo" in output
    assert specs_of(other_server.url) == specs_of(live_server.url)


def test_export_of_one_team_is_one_object_that_imports_from_stdin(
    live_server: LiveServer, other_server: LiveServer
) -> None:
    code, output = invoke("teams", "export", "demo", "--url", live_server.url)
    assert code == 0, output
    spec = json.loads(output)
    assert spec["name"] == "demo" and spec["kind"] == "round_robin"
    spec["name"] = "demo_copy"
    code, output = invoke("teams", "import", "-", "--url", other_server.url, input=json.dumps(spec))
    assert code == 0, output
    assert specs_of(other_server.url)["demo_copy"]["members"] == spec["members"]


def test_list_shows_each_team_and_its_members(live_server: LiveServer) -> None:
    code, output = invoke("teams", "list", "--url", live_server.url)
    assert code == 0, output
    row = next(line for line in output.splitlines() if line.strip().startswith("demo"))
    assert "round_robin" in row and "writer, critic" in row
    code, output = invoke("teams", "list", "--json", "--url", live_server.url)
    assert [t["name"] for t in json.loads(output)] == ["demo"]


def test_an_invalid_spec_is_refused_with_the_field_at_fault(live_server: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(team("broken", members=[agent("writer", "nope/model")])))
    code, output = invoke("teams", "import", str(bad), "--url", live_server.url)
    assert code == 1
    assert "team broken:" in output and "members" in output
    assert "broken" not in specs_of(live_server.url)


def test_commands_explain_an_unreachable_server() -> None:
    code, output = invoke("teams", "list", "--url", "http://127.0.0.1:9")
    assert code == 1
    assert "Cannot reach a SwarmDirector server at http://127.0.0.1:9" in " ".join(output.split())


def test_run_exits_1_when_the_run_fails(live_server: LiveServer, tmp_path: Path) -> None:
    spec = tmp_path / "failing.json"
    spec.write_text(json.dumps(team("failing", members=[agent("writer", "fake/fail")])))
    code, output = invoke("run", str(spec), "Try.", "--url", live_server.url)
    assert code == 1
    assert "✖ failed (model_error)" in output


def test_run_of_an_unknown_team_is_a_clear_error(live_server: LiveServer) -> None:
    code, output = invoke("run", "nosuchteam", "Try.", "--url", live_server.url)
    assert code == 1
    assert "error:" in output and "nosuchteam" in output and "(team_not_found)" in output


def test_run_takes_the_url_and_key_from_the_environment(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARM_URL", live_server.url)
    monkeypatch.setenv("SWARM_API_KEY", "sd_not_a_key")
    code, output = invoke("run", "demo", "Hello.")
    assert code == 1
    assert "(unauthorized)" in output  # it reached this server, with that key


def test_run_shows_tool_calls_and_hand_offs(live_server: LiveServer, tmp_path: Path) -> None:
    script = [
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6 * 7"}}]},
        {"handoff": "expert"},
    ]
    members = [
        agent("triage", "fake/t3", tools=["calculator"], handoffs=["expert"], model_options={"script": script}),
        agent("expert", "fake/t3"),
    ]
    spec = tmp_path / "swarm.json"
    spec.write_text(json.dumps(team("desk", kind="swarm", members=members, max_messages=5)))
    code, output = invoke("run", str(spec), "What is six times seven?", "--url", live_server.url)
    assert code == 0, output
    assert '⚙ triage calls calculator({"expression": "6 * 7"})' in output
    assert "⮑ calculator → 42" in output
    assert "↪ triage hands off to expert" in output
    assert "expert ▸ Fake reply" in output


def test_worker_refuses_to_start_without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWARM_REDIS_URL", raising=False)
    result = runner.invoke(cli, ["worker", "--port", "1"])
    assert result.exit_code == 2
    assert "SWARM_REDIS_URL" in result.output


def test_serve_refuses_to_leave_runs_to_workers_without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from app.core.settings import Settings

    with pytest.raises(ValidationError, match="SWARM_REDIS_URL"):
        Settings(_env_file=None, execute_runs=False)  # type: ignore[call-arg]
