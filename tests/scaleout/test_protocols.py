"""The protocol dialects on the distributed backend: API replicas that serve, a worker that executes.

What issue 22 asks to see: the OpenAI-compatible API and AG-UI work unchanged when the replica a
client talks to runs nothing, and when the client moves between replicas mid-run. A streamed chat
reports the run's own usage; a background response dropped on one replica is resumed on the other
with every event once; a response is cancelled from a replica that does not execute it; an AG-UI
run dropped on one replica is reconnected on the other with each message once; and an AG-UI
interrupt raised through one replica is answered through the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ag_ui.core import Event
from ag_ui_validate.pytest_plugin import validate_agui
from openai import AsyncOpenAI
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from tests.fixtures.runs import wait_for_status
from tests.fixtures.specs import agent, team
from tests.scaleout.conftest import Cluster, Proc

pytestmark = pytest.mark.e2e

PAIR = team("pair", model="fake/t8", max_messages=3)
# a reply streams 30 tokens at 10 ms: a run still going when a client drops it and comes back
STEADY = team("steady", model="fake/t30-d10", max_messages=5)
SLOW = team("slow", model="fake/t400-d5", max_messages=6)  # two seconds a reply: cancelled long before its end
ASKING = team("asking", members=[agent("helper", "fake/t5"), {"name": "human", "kind": "user_proxy"}], max_messages=4)

AGUI_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


async def replicas(cluster: Cluster, http: httpx.AsyncClient, *teams: dict[str, Any]) -> tuple[Proc, Proc]:
    """Two API replicas and a worker, up, with ``teams`` stored (through the first)."""
    a, b = cluster.api("api-a"), cluster.api("api-b")
    await cluster.up(a, b, cluster.worker("worker"))
    for spec in teams:
        made = await http.post(f"{a.url}/v1/teams", json=spec)
        assert made.status_code == 201, made.text
    return a, b


def sdk(replica: Proc) -> AsyncOpenAI:
    # an open server (no key created) takes any key, as local OpenAI-compatible servers do
    return AsyncOpenAI(base_url=f"{replica.url}/openai/v1", api_key="unused", max_retries=0)


def dump(events: list[ResponseStreamEvent]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


def run_input(thread: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "threadId": thread,
        "runId": f"run_{uuid.uuid4().hex[:8]}",
        "messages": [{"id": f"msg_{uuid.uuid4().hex[:8]}", "role": "user", "content": "Write a haiku about rivers."}],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }
    body.update(extra)
    return body


async def agui_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """An AG-UI stream's events (each frame ends with a blank line; comments are skipped),
    each checked against AG-UI's own event models."""
    assert response.status_code == 200, response.status_code
    assert response.headers["content-type"].startswith("text/event-stream")
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data.append(line.removeprefix("data: "))
        elif not line and data:
            event = json.loads("\n".join(data))
            AGUI_EVENT.validate_python(event)
            yield event
            data = []


async def agui(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    async with http.stream(method, url, **kwargs) as response:
        return [e async for e in agui_events(response)]


async def test_a_streamed_chat_through_a_replica_reports_the_runs_usage(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = await replicas(cluster, http, PAIR)
    async with (
        sdk(a) as client,
        client.chat.completions.with_streaming_response.create(
            model="pair",
            messages=[{"role": "user", "content": "Write a haiku about rivers."}],
            stream=True,
            stream_options={"include_usage": True},
        ) as response,
    ):
        run_id = response.headers["X-Swarm-Run"]
        chunks = [chunk async for chunk in await response.parse()]
    run = (await http.get(f"{a.url}/v1/runs/{run_id}")).json()
    assert run["status"] == "succeeded", run
    assert chunks[0].id == f"chatcmpl-{run_id}"
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert all(chunk.usage is None for chunk in chunks[:-1])  # the usage comes once, last
    expected = run["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
        expected["total_tokens"],
    )
    assert usage.total_tokens > 0
    content = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    assert content == run["result"]["text"] != ""

    # the other replica lists the same models and answers a chat whole
    async with sdk(a) as on_a, sdk(b) as client:
        models = [m.id for m in (await client.models.list()).data]
        assert "pair" in models and models == [m.id for m in (await on_a.models.list()).data]
        whole = await client.chat.completions.with_raw_response.create(
            model="pair", messages=[{"role": "user", "content": "Another haiku."}]
        )
        completion = whole.parse()
    other = (await http.get(f"{a.url}/v1/runs/{whole.headers['X-Swarm-Run']}")).json()
    assert completion.choices[0].message.content == other["result"]["text"] != ""
    assert completion.usage is not None and completion.usage.total_tokens == other["usage"]["total_tokens"]


async def test_a_background_response_dropped_on_one_replica_resumes_on_the_other(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = await replicas(cluster, http, STEADY)
    async with sdk(a) as on_a, sdk(b) as on_b:
        stream = await on_a.responses.create(model="steady", input="Write a haiku.", background=True, stream=True)
        seen: list[ResponseStreamEvent] = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.reasoning_text.delta" and len(seen) > 8:
                break
        await stream.close()  # the connection is dropped; the run goes on, on the worker
        assert seen[0].type == "response.created"
        resp_id = seen[0].response.id
        n = seen[-1].sequence_number
        resumed = [e async for e in await on_b.responses.retrieve(resp_id, stream=True, starting_after=n)]
        whole = [e async for e in await on_b.responses.retrieve(resp_id, stream=True)]
        final = await on_b.responses.retrieve(resp_id)
        from_a = await on_a.responses.retrieve(resp_id)

    assert resumed[-1].type == "response.completed"
    numbers = [e.sequence_number for e in seen + resumed]
    assert numbers == sorted(set(numbers)) and resumed[0].sequence_number > n  # each once, in order
    assert dump(seen + resumed) == dump(whole)  # none missing: the stored log gives the same events
    assert final.status == "completed" and final.background is True
    completed = resumed[-1].response
    assert completed.model_dump(mode="json") == final.model_dump(mode="json") == from_a.model_dump(mode="json")
    text = "".join(e.delta for e in seen + resumed if e.type == "response.output_text.delta")
    run = (await http.get(f"{b.url}/v1/runs/{resp_id.removeprefix('resp_')}")).json()
    assert text == final.output_text == run["result"]["text"] != ""
    assert final.usage is not None and final.usage.total_tokens == run["usage"]["total_tokens"]


async def test_a_response_is_cancelled_from_a_replica_that_does_not_run_it(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = await replicas(cluster, http, SLOW)
    async with sdk(a) as on_a, sdk(b) as on_b:
        stream = await on_a.responses.create(model="slow", input="Go on and on.", background=True, stream=True)
        seen: list[ResponseStreamEvent] = []
        async for event in stream:
            seen.append(event)
            if event.type == "response.reasoning_text.delta":
                break  # the worker is streaming the first reply
        await stream.close()
        assert seen[0].type == "response.created"
        resp_id = seen[0].response.id
        cancelled = await on_b.responses.cancel(resp_id)
        # the cancel answers once the run has settled or, past a bound (2 s), as it stands: never as done
        assert cancelled.id == resp_id and cancelled.status in ("cancelled", "in_progress"), cancelled.status
        run = await wait_for_status(
            http, resp_id.removeprefix("resp_"), {"cancelled", "succeeded", "failed"}, url=a.url
        )
        assert run["status"] == "cancelled" and run["stop_reason"] == "cancelled", run
        final = await on_a.responses.retrieve(resp_id)
        events = [e async for e in await on_a.responses.retrieve(resp_id, stream=True)]
    assert final.status == "cancelled" and final.error is None
    assert events[-1].type == "response.failed" and events[-1].response.status == "cancelled"


async def test_an_agui_run_dropped_on_one_replica_reconnects_on_the_other(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = await replicas(cluster, http, STEADY)
    body = run_input("thread-drop")
    dropped: list[dict[str, Any]] = []
    async with http.stream("POST", f"{a.url}/agui/teams/steady", json=body) as response:
        run_path = response.headers["content-location"]
        async for event in agui_events(response):
            dropped.append(event)
            if sum(e["type"] == "TEXT_MESSAGE_CONTENT" for e in dropped) == 3:
                break  # cut in the first agent message; the run has four replies (1.2 s) to go on the worker
    events = await agui(http, "GET", f"{b.url}/agui/teams/steady/runs/{body['runId']}")
    run = await wait_for_status(http, run_path.rsplit("/", 1)[1], {"succeeded"}, url=a.url)
    stored = (await http.get(f"{b.url}/v1/conversations/thread-drop/messages")).json()["data"]

    assert validate_agui(events).diagnostics == []
    assert [e["type"] for e in events[:2]] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]
    assert (events[0]["threadId"], events[0]["runId"]) == ("thread-drop", body["runId"])
    assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"] == {"type": "success"}
    assert events[-1]["usage"][0]["totalTokens"] == run["usage"]["total_tokens"]
    snapshot = [(m["id"], m["content"]) for m in events[1]["messages"]]
    streamed: dict[str, str] = {}
    for e in events[2:]:
        if e["type"] == "TEXT_MESSAGE_START":
            assert e["messageId"] not in streamed, "a message started twice"
            streamed[e["messageId"]] = ""
        elif e["type"] == "TEXT_MESSAGE_CONTENT":
            streamed[e["messageId"]] += e["delta"]
    assert not {mid for mid, _ in snapshot} & set(streamed), "a message both in the snapshot and streamed"
    assert snapshot + list(streamed.items()) == [(m["id"], m["text"]) for m in stored]
    assert [m["agent"] for m in stored] == ["user", "writer", "critic", "writer", "critic"]

    # the same runId posted again, now to B: the same run, replayed to its end; nothing new is started
    async with http.stream("POST", f"{b.url}/agui/teams/steady", json=body) as response:
        assert response.headers["content-location"] == run_path
        replayed = [e async for e in agui_events(response)]
    assert replayed[-1] == events[-1]
    assert len((await http.get(f"{b.url}/v1/runs")).json()["data"]) == 1


async def test_an_agui_interrupt_raised_on_one_replica_is_answered_on_the_other(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a, b = await replicas(cluster, http, ASKING)
    body = run_input("thread-ask")
    paused = await agui(http, "POST", f"{a.url}/agui/teams/asking", json=body)
    assert paused[-1]["type"] == "RUN_FINISHED" and paused[-1]["outcome"]["type"] == "interrupt", paused[-1]
    (interrupt,) = paused[-1]["outcome"]["interrupts"]
    run_id = interrupt["id"].partition("/")[0]
    # the request is stored (and the run's status with it) before any replica streams it
    assert (await http.get(f"{b.url}/v1/runs/{run_id}")).json()["status"] == "awaiting_input"

    entry = {"interruptId": interrupt["id"], "status": "resolved", "payload": "Go ahead."}
    answer = run_input("thread-ask", messages=[], resume=[entry])
    resumed = await agui(http, "POST", f"{b.url}/agui/teams/asking", json=answer)
    assert validate_agui(resumed).diagnostics == []
    assert resumed[-1]["type"] == "RUN_FINISHED" and resumed[-1]["outcome"] == {"type": "success"}, resumed[-1]
    received = [e for e in resumed if e["type"] == "CUSTOM" and e["name"] == "swarmdirector.input_received"]
    assert [e["value"]["content"] for e in received] == ["Go ahead."]
    run = await wait_for_status(http, run_id, {"succeeded"}, timeout=5, url=a.url)
    assert run["conversation_id"] == "thread-ask"
    messages = (await http.get(f"{a.url}/v1/conversations/thread-ask/messages")).json()["data"]
    assert [(m["agent"], m["text"] if m["agent"] == "human" else "") for m in messages] == [
        ("user", ""),
        ("helper", ""),
        ("human", "Go ahead."),
        ("helper", ""),
    ]
