"""Every team kind that parks (issue 24): round robin and selector at a user proxy's turn, a swarm at a
hand-off to the user.

For each, on a real uvicorn: the run parks (``awaiting_input``, no task left in the process), the
answer resumes it, the next speaker's model call has the answer in its prompt (the fake model's
prompt log, ``SWARM_FAKE_PROMPT_LOG``), and what the run stored equals what the same exchange stores
when nobody parks: the agents in order, their texts, the message count and the stop reason. The
run that does not park is, for round robin and selector, the team with its person replaced by a
scripted agent saying the answer; for a swarm, the same swarm with a ``user_proxy`` member that never
gets a turn, which makes it wait for the person live (``parkable``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.settings import Settings
from tests.conftest import Backend, LiveServer
from tests.e2e.test_streaming import assert_well_formed
from tests.fixtures.runs import start_run, stored_events, wait_for_status
from tests.fixtures.specs import agent, team

pytestmark = pytest.mark.e2e

ANSWER = "Ship it on Tuesday."
PERSON = {"name": "human", "kind": "user_proxy"}


@pytest.fixture
def prompt_log(tmp_path: Path) -> Path:
    return tmp_path / "prompts.jsonl"


@pytest.fixture
def settings(backend: Backend, tmp_path: Path, prompt_log: Path) -> Settings:
    """The server of ``live_server``: its fake model writes each call's prompt to ``prompt_log``."""
    return backend.settings(tmp_path, fake_prompt_log=prompt_log)


def stand_in(text: str) -> dict[str, Any]:
    """The person's seat taken by a scripted agent that says ``text``: the same exchange, no park."""
    return agent("human", "fake/t1", model_options={"script": [{"text": text}]})


def round_robin(person: dict[str, Any]) -> dict[str, Any]:
    return team("asking", members=[agent("helper", "fake/t5"), person], max_messages=4)


def selector(person: dict[str, Any]) -> dict[str, Any]:
    """The fake model picks a selector prompt's first candidate, and the previous speaker is never a
    candidate: helper (first of three), then the person (first of the other two), then helper again."""
    members = [agent("helper", "fake/t5"), person, agent("reviewer", "fake/t5")]
    return team("choosing", kind="selector", selector_model="fake/t1", members=members, max_messages=4)


async def not_live(server: LiveServer, run_id: str, timeout: float = 15) -> None:
    """Until the run's task has left the process (a parked run's ends just after its park commits)."""
    manager = server.services.launcher.manager
    deadline = asyncio.get_running_loop().time() + timeout
    while manager.is_live(run_id):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} still has a task {timeout} s after it parked")
        await asyncio.sleep(0.02)


async def runs_live(client: httpx.AsyncClient) -> float:
    """``swarm_runs_live`` of the server's ``/metrics``: runs queued or going in the process."""
    text = (await client.get("/metrics")).text
    line = next(line for line in text.splitlines() if line.startswith("swarm_runs_live "))
    return float(line.split()[1])


async def park(server: LiveServer, client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Wait for the run to park; check it holds nothing live; its pending ``input.requested``."""
    await wait_for_status(client, run_id, {"awaiting_input"})
    await not_live(server, run_id)
    assert await runs_live(client) == 0
    requested = [e for e in await stored_events(client, run_id) if e["type"] == "input.requested"]
    return dict(requested[-1]["data"])


async def answer(client: httpx.AsyncClient, run_id: str, request: dict[str, Any], content: str) -> None:
    r = await client.post(f"/v1/runs/{run_id}/input", json={"request_id": request["request_id"], "content": content})
    assert r.status_code == 202, r.text


async def ended(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run, finished; with its stored messages (agent and text) and its events checked whole."""
    run = await wait_for_status(client, run_id, {"succeeded", "failed", "cancelled", "timed_out"})
    events = await stored_events(client, run_id)
    assert_well_formed(events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    r = await client.get(f"/v1/conversations/{run['conversation_id']}/messages")
    run["messages"] = [(m["agent"], m["text"]) for m in r.json()["data"]]
    run["events"] = events
    return run


def outcome(run: dict[str, Any]) -> tuple[Any, ...]:
    """What a parked run and its unparked twin must agree on."""
    return run["status"], run["stop_reason"], run["message_count"], run["messages"]


def model_calls(log: Path) -> list[dict[str, Any]]:
    """Every call of the fake model, in order: ``{"prompt": [[type, source, text], ...], "reply": ...}``."""
    return [json.loads(line) for line in log.read_text().splitlines()]


def prompts_after(log: Path, answer_text: str) -> list[dict[str, Any]]:
    """The fake model's calls whose prompt holds ``answer_text``."""
    return [c for c in model_calls(log) if any(answer_text in part[2] for part in c["prompt"])]


@pytest.mark.parametrize("shape", [round_robin, selector], ids=["round_robin", "selector"])
async def test_a_user_proxy_turn_parks_and_the_answer_resumes_it(
    shape: Any, live_server: LiveServer, live_client: httpx.AsyncClient, prompt_log: Path
) -> None:
    asked = await start_run(live_client, team=shape(PERSON))
    request = await park(live_server, live_client, asked["id"])
    assert request["agent"] == "human"
    await answer(live_client, asked["id"], request, ANSWER)
    parked = await ended(live_client, asked["id"])
    types = [e["type"] for e in parked["events"]]
    assert types.count("input.requested") == types.count("input.received") == 1

    # the helper spoke next, with the person's answer last in its model call's prompt (a selector's
    # picks answer with a name; the helper's generated replies start "Fake reply")
    assert [agent for agent, _ in parked["messages"]] == ["user", "helper", "human", "helper"]
    spoken = [c for c in prompts_after(prompt_log, ANSWER) if c["reply"].startswith("Fake reply")]
    assert [(c["prompt"][-1][1:], c["reply"]) for c in spoken] == [(["human", ANSWER], parked["messages"][-1][1])]
    if shape is selector:  # the person's turn was the selector model's pick
        assert "human" in [c["reply"] for c in model_calls(prompt_log)]

    twin = await start_run(live_client, team=shape(stand_in(ANSWER)))
    unparked = await ended(live_client, twin["id"])
    assert "input.requested" not in [e["type"] for e in unparked["events"]]
    assert outcome(parked) == outcome(unparked)
    assert parked["stop_reason"] == "Maximum number of messages 4 reached, current message count: 4"


def swarm(*, script: list[dict[str, Any]], max_messages: int, live: bool = False) -> dict[str, Any]:
    """One agent that hands off to the user as ``script`` says; ``live``: with a user proxy member that
    never speaks, so the swarm cannot park and waits for the person live."""
    members: list[dict[str, Any]] = [agent("desk", "fake/t3", handoffs=["user"], model_options={"script": script})]
    if live:
        members.append(PERSON)
    return team("desk", kind="swarm", members=members, max_messages=max_messages)


async def answer_each(
    server: LiveServer, client: httpx.AsyncClient, run_id: str, answers: list[str], *, parks: bool
) -> list[dict[str, Any]]:
    """Answer the run's requests in turn, each once it asks; the requests."""
    requests: list[dict[str, Any]] = []
    for content in answers:
        if parks:
            request = await park(server, client, run_id)
        else:
            # a run waiting live stays `awaiting_input` until it has taken the last answer: wait for
            # its next request itself
            async with asyncio.timeout(30):
                while len(
                    asked := [e for e in await stored_events(client, run_id) if e["type"] == "input.requested"]
                ) <= len(requests):
                    await asyncio.sleep(0.02)
            await wait_for_status(client, run_id, {"awaiting_input"})
            assert server.services.launcher.manager.is_live(run_id)  # waiting live, not parked
            request = asked[-1]["data"]
        assert request["agent"] == "desk"
        assert request["request_id"] not in {r["request_id"] for r in requests}
        requests.append(request)
        await answer(client, run_id, request, content)
    return requests


async def test_a_swarm_hand_off_to_the_user_parks_and_the_answer_goes_back_to_the_agent(
    live_server: LiveServer, live_client: httpx.AsyncClient, prompt_log: Path
) -> None:
    script = [{"handoff": "user"}, {"text": "Thanks, noted."}]
    asked = await start_run(live_client, team=swarm(script=script, max_messages=4))
    await answer_each(live_server, live_client, asked["id"], [ANSWER], parks=True)
    parked = await ended(live_client, asked["id"])
    texts = [text for _, text in parked["messages"]]
    assert texts[texts.index(ANSWER) + 1] == "Thanks, noted."
    assert parked["stop_reason"] == "Maximum number of messages 4 reached, current message count: 4"
    # the answer is the last thing in the prompt of the agent's next call, which said what followed it
    after = prompts_after(prompt_log, ANSWER)
    assert [(c["prompt"][-1][1:], c["reply"]) for c in after] == [(["user", ANSWER], "Thanks, noted.")]

    twin = await start_run(live_client, team=swarm(script=script, max_messages=4, live=True))
    await answer_each(live_server, live_client, twin["id"], [ANSWER], parks=False)
    assert outcome(parked) == outcome(await ended(live_client, twin["id"]))


async def test_a_swarms_message_limit_counts_across_its_hand_offs_to_the_user(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    """Task, hand-off, answer, hand-off, answer, hand-off: the sixth message reaches the limit, so the third
    hand-off ends the run instead of asking again (counted per resume, it would ask a third time)."""
    script = [{"handoff": "user"}, {"handoff": "user"}, {"handoff": "user"}, {"text": "Never said."}]
    answers = ["First answer.", "Second answer."]
    asked = await start_run(live_client, team=swarm(script=script, max_messages=6))
    await answer_each(live_server, live_client, asked["id"], answers, parks=True)
    parked = await ended(live_client, asked["id"])
    assert parked["status"] == "succeeded"
    # both of the swarm's conditions hold at the third hand-off; AutoGen names them together
    limit = "Maximum number of messages 6 reached, current message count: 6"
    assert parked["stop_reason"] == f"{limit}, Handoff to user from desk detected."
    types = [e["type"] for e in parked["events"]]
    assert types.count("input.requested") == types.count("input.received") == 2
    assert "Never said." not in [text for _, text in parked["messages"]]

    twin = await start_run(live_client, team=swarm(script=script, max_messages=6, live=True))
    await answer_each(live_server, live_client, twin["id"], answers, parks=False)
    assert outcome(parked) == outcome(await ended(live_client, twin["id"]))
