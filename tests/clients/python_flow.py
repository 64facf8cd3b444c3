"""A program written against the Python client generated from docs/openapi.json (`swarmdirector_client`).

Not collected by pytest: ``test_generated_clients.py`` generates the client, type-checks this file with
it under ``mypy --strict``, then runs it against a live server: ``python python_flow.py BASE_URL``.
It prints one JSON object of what it saw; the test asserts on that.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from swarmdirector_client import Client
from swarmdirector_client.api.conversations import list_conversation_messages
from swarmdirector_client.api.runs import create_run, create_run_wait, get_run, list_run_events
from swarmdirector_client.api.teams import create_team
from swarmdirector_client.models import (
    AgentSpec,
    EventPage,
    MessageCompletedEvent,
    MessageDeltaEvent,
    MessagePage,
    Problem,
    RunCompletedEvent,
    RunCreate,
    RunCreateIfBusy,
    RunQueuedEvent,
    RunRead,
    RunReadStatus,
    TeamRead,
    TeamSpec,
    Termination,
)

TERMINAL = {RunReadStatus.SUCCEEDED, RunReadStatus.FAILED, RunReadStatus.CANCELLED, RunReadStatus.TIMED_OUT}


def wait_for(client: Client, run_id: str, bound_s: float = 30) -> RunRead:
    deadline = time.monotonic() + bound_s
    while True:
        run = get_run.sync(run_id, client=client)
        assert isinstance(run, RunRead), run
        if run.status in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def main(base_url: str) -> dict[str, Any]:
    client = Client(base_url=base_url, raise_on_unexpected_status=True)

    spec = TeamSpec(
        name="generated_pair",
        members=[AgentSpec(name="writer", model="fake/t8"), AgentSpec(name="critic", model="fake/t8")],
        termination=Termination(max_messages=3),
    )
    team = create_team.sync(client=client, body=spec)
    assert isinstance(team, TeamRead), team
    # mypy must know the fields' types, or this ignore would be unused (and --strict an error)
    team.name = 3  # type: ignore[assignment]
    team.name = "generated_pair"

    started = create_run.sync(client=client, body=RunCreate(task="Write a haiku about rivers.", team_id=team.id))
    assert isinstance(started, RunRead), started
    run = wait_for(client, started.id)

    messages = list_conversation_messages.sync(run.conversation_id, client=client)
    assert isinstance(messages, MessagePage), messages

    # the event log as typed events: the JSON page, a route of its own
    page = list_run_events.sync(run.id, client=client)
    assert isinstance(page, EventPage), page
    streamed: dict[str, str] = {}
    completed: dict[str, str] = {}
    for event in page.data:
        if isinstance(event, MessageDeltaEvent):
            streamed[event.data.message_id] = streamed.get(event.data.message_id, "") + event.data.text
        elif isinstance(event, MessageCompletedEvent):
            completed[event.data.message_id] = event.data.text

    # a second run continues the conversation, and this time the call waits for it
    follow_up = create_run_wait.sync(
        client=client,
        body=RunCreate(
            task="Now shorter.", team_id=team.id, conversation_id=run.conversation_id, if_busy=RunCreateIfBusy.ENQUEUE
        ),
    )
    assert isinstance(follow_up, RunRead), follow_up

    missing = get_run.sync("run_does_not_exist", client=client)
    assert isinstance(missing, Problem), missing

    return {
        "team": team.name,
        "status": str(run.status),
        "messages": [[m.agent, m.text] for m in messages.data],
        "event_classes": [type(e).__name__ for e in page.data],
        "first_is_queued": isinstance(page.data[0], RunQueuedEvent),
        "last_is_completed": isinstance(page.data[-1], RunCompletedEvent),
        "deltas_rebuild_messages": all(completed[k] == v for k, v in streamed.items()) and bool(streamed),
        "follow_up": [str(follow_up.status), follow_up.conversation_id == run.conversation_id],
        "problem": [missing.status, missing.code],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
