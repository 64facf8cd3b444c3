"""`swarmdirector run` in a real terminal (a pty, through pexpect), against a real server or with --local."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.conftest import LiveServer, make_settings

pytestmark = pytest.mark.e2e

SWARMDIRECTOR = Path(sys.executable).with_name("swarmdirector")
SGR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN_ID = re.compile(r"run (run_[0-9A-Z]+)")
# a bound for a whole run on a busy machine, not a timing assumption
EXPECT_S = 60


def plain(text: str) -> str:
    return SGR.sub("", text).replace("\r\n", "\n")


def shown(text: str) -> re.Pattern[str]:
    """``text`` as the terminal shows it: colour changes may come between any two characters."""
    return re.compile(r"(?:\x1b\[[0-9;]*m)*".join(re.escape(c) for c in text))


def spawn(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> pexpect.spawn:
    assert SWARMDIRECTOR.exists(), f"the package's console script is missing: {SWARMDIRECTOR}"
    environment = {**os.environ, "TERM": "xterm-256color", **(env or {})}
    environment.pop("NO_COLOR", None)
    child = pexpect.spawn(
        str(SWARMDIRECTOR),
        list(args),
        env=environment,
        cwd=str(cwd) if cwd else None,
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=EXPECT_S,
    )
    child.logfile_read = io.StringIO()
    return child


def finish(child: pexpect.spawn) -> tuple[str, int]:
    """Everything the child printed (colours included), and its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, f"killed by signal {child.signalstatus}"
    return child.logfile_read.getvalue(), child.exitstatus


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[LiveServer]:
    """Every agent without a model streams 30 words, 10 ms apart: streaming you can watch."""
    with LiveServer(make_settings(tmp_path, default_model="fake/t30-d10")) as server:
        yield server


def agent_style(output: str, agent: str) -> str:
    match = re.search(r"\x1b\[([0-9;]+)m" + agent + r"\x1b\[0m\x1b\[[0-9;]+m ▸ ", output)
    assert match, f"no coloured label for {agent} in {output!r}"
    return match.group(1)


def test_run_streams_both_agents_in_their_own_colours_and_exits_0(slow_server: LiveServer) -> None:
    child = spawn("run", "demo", "Write a haiku about the sea.", "--url", slow_server.url)
    child.expect("writer")  # the first agent's text arrives while the run is going
    output, status = finish(child)
    text = plain(output)
    assert status == 0, text
    # (the writer's first reply may start streaming before the task is shown: its second is checked)
    assert "critic ▸ Fake reply 1 after 3 messages: the quick brown fox" in text
    assert "writer ▸ Fake reply 2 after 4 messages: the quick brown fox" in text
    assert "✔ succeeded" in text
    assert agent_style(output, "writer") != agent_style(output, "critic")


def test_ctrl_c_cancels_the_run_on_the_server(tmp_path: Path) -> None:
    # 400 words, 20 ms apart: eight seconds a message, far longer than the cancel takes
    with LiveServer(make_settings(tmp_path, default_model="fake/t400-d20")) as server:
        child = spawn("run", "demo", "Write a long poem.", "--url", server.url)
        child.expect(RUN_ID)
        run_id = child.match.group(1)
        child.expect("writer")
        child.expect("brown")  # streaming has started (each delta is its own coloured span)
        child.sendintr()
        child.expect(shown("cancelling the run"))
        output, status = finish(child)
        assert "■ cancelled (cancelled)" in plain(output)
        assert status == 130
        run = httpx.get(f"{server.url}/v1/runs/{run_id}").json()
        assert run["status"] == "cancelled"
        assert run["stop_reason"] == "cancelled"


def test_an_agent_asks_and_the_answer_is_typed_in_place(slow_server: LiveServer, tmp_path: Path) -> None:
    spec = {
        "name": "asking",
        "members": [{"name": "helper", "model": "fake/t5"}, {"name": "human", "kind": "user_proxy"}],
        "termination": {"max_messages": 4},
    }
    team_file = tmp_path / "asking.json"
    team_file.write_text(json.dumps(spec))
    child = spawn("run", str(team_file), "Plan a picnic.", "--url", slow_server.url)
    child.expect(RUN_ID)
    run_id = child.match.group(1)
    child.expect(shown("human asks for your input"))
    child.expect(shown("> "))
    child.sendline("Bring lemonade.")
    output, status = finish(child)
    text = plain(output)
    assert status == 0, text
    assert "human ▸ Bring lemonade." in text
    assert "helper ▸ Fake reply 2 after 4 messages" in text
    run = httpx.get(f"{slow_server.url}/v1/runs/{run_id}").json()
    messages = httpx.get(f"{slow_server.url}/v1/conversations/{run['conversation_id']}/messages").json()["data"]
    assert [m["agent"] for m in messages] == ["user", "helper", "human", "helper"]
    assert messages[2]["text"] == "Bring lemonade."


def test_local_runs_the_team_in_process_without_a_server(tmp_path: Path) -> None:
    env = {
        "SWARM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'local.db'}",
        "SWARM_DEFAULT_MODEL": "fake/t12-d5",
    }
    child = spawn("run", "demo", "Write a haiku.", "--local", env=env, cwd=tmp_path)
    output, status = finish(child)
    text = plain(output)
    assert status == 0, text
    assert "critic ▸ Fake reply 1" in text and "writer ▸ Fake reply 2" in text
    assert re.search(r"· http://127\.0\.0\.1:\d+", text), "the header names the in-process server"
    assert (tmp_path / "local.db").exists()


def test_an_unreachable_server_is_explained(tmp_path: Path) -> None:
    child = spawn("run", "demo", "Hello.", "--url", "http://127.0.0.1:9")
    output, status = finish(child)
    assert status == 1
    assert "Cannot reach a SwarmDirector server at http://127.0.0.1:9" in plain(output).replace("\n", " ")
