"""AutoGen component interop: `GET /v1/teams/{id}/component` and `POST /v1/teams/import`.

Exports are compared with AutoGen 0.7.5's own ``dump_component()`` of the same team built
from real AutoGen classes; imports read real dumps too. Refused components carry payloads
that would leave a mark if anything loaded them, and a control shows that they would.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from autogen_agentchat.agents import AssistantAgent, CodeExecutorAgent, UserProxyAgent
from autogen_agentchat.base import Handoff
from autogen_agentchat.conditions import (
    HandoffTermination,
    MaxMessageTermination,
    TextMentionTermination,
    TimeoutTermination,
    TokenUsageTermination,
)
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat, Swarm
from autogen_core.models import ModelFamily, ModelInfo
from autogen_core.tools import FunctionTool
from autogen_ext.code_executors.local import LocalCommandLineCodeExecutor
from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient
from autogen_ext.models.openai._model_info import get_info
from autogen_ext.models.openai.config import AzureOpenAIClientConfigurationConfigModel
from autogen_ext.models.replay import ReplayChatCompletionClient
from fastapi import FastAPI

from app.core.settings import Settings
from app.teams.models import Team
from tests.conftest import Backend, serve_app, services_of
from tests.fixtures.principals import api_key_headers
from tests.fixtures.problems import assert_field_error, assert_problem
from tests.fixtures.specs import agent, team

SERVER_KEY = "sk-server-key-never-exported"
AZURE_KEY = "az-server-key-never-exported"
DUMMY_KEY = "sk-dummy-key-pasted-into-a-component"
AZURE_ENDPOINT = "https://swarm-test.openai.azure.com"
COMPAT_URL = "http://127.0.0.1:11434/v1"
TOOLS = "swarmdirector.tools"
APPROVE = "swarmdirector.approve_tools"
C: list[Any] = ["body", "component"]
CONFIG: list[Any] = [*C, "config"]
SERVER_FIELDS = ("id", "object", "created_at", "updated_at", "name")


@pytest.fixture
def settings(backend: Backend, tmp_path: Path) -> Settings:
    return backend.settings(
        tmp_path,
        openai_api_key=SERVER_KEY,
        azure_openai_api_key=AZURE_KEY,
        azure_openai_endpoint=AZURE_ENDPOINT,
        openai_compatible_base_url=COMPAT_URL,
    )


# -- helpers -------------------------------------------------------------------------------------


def dumped(component: Any) -> dict[str, Any]:
    """AutoGen's own JSON of a component, without the masked ``api_key`` entries it writes."""
    return without_keys(component.dump_component().model_dump(mode="json"))


def without_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_keys(v) for k, v in node.items() if k != "api_key"}
    if isinstance(node, list):
        return [without_keys(v) for v in node]
    return node


def assert_no_secrets(text: str) -> None:
    for secret in (SERVER_KEY, AZURE_KEY, DUMMY_KEY, "**********", '"api_key"'):
        assert secret not in text, f"{secret} leaked"


def openai_client(model: str = "gpt-4o-mini", *, stream: bool = True, **extra: Any) -> OpenAIChatCompletionClient:
    """The client the server builds for ``openai/<model>`` (its key aside)."""
    if stream:
        extra["stream_options"] = {"include_usage": True}
    return OpenAIChatCompletionClient(model=model, api_key="sk-dummy", model_info=get_info(model), **extra)


GENERIC_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


async def export(client: httpx.AsyncClient, ref: str) -> dict[str, Any]:
    r = await client.get(f"/v1/teams/{ref}/component")
    assert r.status_code == 200, r.text
    assert_no_secrets(r.text)
    return dict(r.json())


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/v1/teams", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def import_(client: httpx.AsyncClient, component: dict[str, Any], name: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"component": component}
    if name is not None:
        body["name"] = name
    return await client.post("/v1/teams/import", json=body)


async def imported(client: httpx.AsyncClient, component: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    r = await import_(client, component, name)
    assert r.status_code == 201, r.text
    assert_no_secrets(r.text)
    return dict(r.json())


async def team_names(client: httpx.AsyncClient) -> list[str]:
    return sorted(t["name"] for t in (await client.get("/v1/teams", params={"limit": 200})).json()["data"])


def spec_of(team_read: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in team_read.items() if k not in SERVER_FIELDS}


# hand-written components, as small as a gallery may hold them (no envelope but provider and config)


def openai_model(model: str = "gpt-4o-mini", **config: Any) -> dict[str, Any]:
    return {"provider": "autogen_ext.models.openai.OpenAIChatCompletionClient", "config": {"model": model, **config}}


def assistant(name: str, model_client: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    return {
        "provider": "autogen_agentchat.agents.AssistantAgent",
        "config": {"name": name, "model_client": model_client or openai_model(), **config},
    }


def max_messages(n: int) -> dict[str, Any]:
    return {"provider": "autogen_agentchat.conditions.MaxMessageTermination", "config": {"max_messages": n}}


def rr_team(*participants: dict[str, Any], name: str | None = "gallery", **config: Any) -> dict[str, Any]:
    config.setdefault("termination_condition", max_messages(4))
    if name is not None:
        config["name"] = name
    return {
        "provider": "autogen_agentchat.teams.RoundRobinGroupChat",
        "component_type": "team",
        "config": {"participants": list(participants) or [assistant("helper")], **config},
    }


# -- the four kinds, as specs and as AutoGen builds them -------------------------------------------

SELECTOR_PROMPT = "Pick from {participants}. Roles: {roles}. History: {history}"
SCRIPT = [{"text": "Hello there."}, {"error": "boom", "error_kind": "transient"}]


def round_robin_spec(name: str = "duo") -> dict[str, Any]:
    members = [
        agent(
            "writer",
            "openai/gpt-4o-mini",
            description="Writes.",
            system_message="Write.",
            tools=["calculator", "current_time"],
            model_options={"temperature": 0.3, "max_tokens": 200},
        ),
        agent("critic", "openai/gpt-4o-mini", streaming=False, reflect_on_tool_use=True, max_tool_iterations=3),
        agent("reader", None, kind="user_proxy", description="The one reading."),
    ]
    termination = {"text_mention": "DONE", "timeout_s": 30, "token_budget": 1000}
    return team(name, members=members, max_messages=5, description="Two and a reader.", termination=termination)


def round_robin_autogen() -> RoundRobinGroupChat:
    writer = AssistantAgent(
        "writer",
        model_client=openai_client(temperature=0.3, max_tokens=200),
        description="Writes.",
        system_message="Write.",
        model_client_stream=True,
        metadata={TOOLS: "calculator,current_time"},
    )
    critic = AssistantAgent(
        "critic",
        model_client=openai_client(stream=False),
        description="The critic agent.",
        model_client_stream=False,
        reflect_on_tool_use=True,
        max_tool_iterations=3,
    )
    reader = UserProxyAgent("reader", description="The one reading.")
    termination = (
        MaxMessageTermination(5)
        | TextMentionTermination("DONE")
        | TimeoutTermination(30)
        | TokenUsageTermination(max_total_token=1000)
    )
    return RoundRobinGroupChat(
        [writer, critic, reader], termination_condition=termination, name="duo", description="Two and a reader."
    )


def selector_spec(name: str = "panel") -> dict[str, Any]:
    members = [
        agent("proposer", "openai_compatible/llama3.1"),
        agent("checker", "openai_compatible/llama3.1", description="Checks."),
    ]
    return team(
        name,
        kind="selector",
        members=members,
        max_messages=6,
        selector_model="openai/gpt-4o",
        selector_prompt=SELECTOR_PROMPT,
        allow_repeated_speaker=True,
    )


def selector_autogen() -> SelectorGroupChat:
    def local(name: str, description: str) -> AssistantAgent:
        client = OpenAIChatCompletionClient(
            model="llama3.1",
            api_key="not-needed",
            base_url=COMPAT_URL,
            model_info=GENERIC_INFO,
            stream_options={"include_usage": True},
        )
        return AssistantAgent(name, model_client=client, description=description, model_client_stream=True)

    return SelectorGroupChat(
        [local("proposer", "The proposer agent."), local("checker", "Checks.")],
        model_client=openai_client("gpt-4o", stream=False),
        termination_condition=MaxMessageTermination(6),
        selector_prompt=SELECTOR_PROMPT,
        allow_repeated_speaker=True,
        emit_team_events=True,
        name="panel",
    )


def swarm_spec(name: str = "desk") -> dict[str, Any]:
    members = [
        agent("triage", "openai/gpt-4o-mini", handoffs=["expert", "user"]),
        agent("expert", "openai/gpt-4o-mini", handoffs=["triage"], system_message="Answer."),
    ]
    return team(name, kind="swarm", members=members, max_messages=8)


def swarm_autogen() -> Swarm:
    triage = AssistantAgent(
        "triage",
        model_client=openai_client(),
        description="The triage agent.",
        handoffs=["expert", "user"],
        model_client_stream=True,
    )
    expert = AssistantAgent(
        "expert",
        model_client=openai_client(),
        description="The expert agent.",
        system_message="Answer.",
        handoffs=["triage"],
        model_client_stream=True,
    )
    termination = MaxMessageTermination(8) | HandoffTermination(target="user")
    return Swarm([triage, expert], termination_condition=termination, name="desk")


def single_spec(name: str = "solo") -> dict[str, Any]:
    members = [agent("solo", "fake/t8-end", model_options={"script": SCRIPT})]
    return team(name, kind="single", members=members, max_messages=4)


def single_autogen() -> dict[str, Any]:
    replay = ReplayChatCompletionClient(["Hello there."], model_info=GENERIC_INFO)
    solo = AssistantAgent("solo", model_client=replay, description="The solo agent.", model_client_stream=True)
    termination = MaxMessageTermination(2) | MaxMessageTermination(4)
    expected = dumped(RoundRobinGroupChat([solo], termination_condition=termination, name="solo"))
    # the fake model behind the replay client, under the key AutoGen ignores
    expected["config"]["participants"][0]["config"]["model_client"]["config"]["swarmdirector"] = {
        "model": "fake/t8-end",
        "model_options": {
            "script": [
                {"text": "Hello there.", "error_kind": "model_error"},
                {"error": "boom", "error_kind": "transient"},
            ]
        },
    }
    return expected


KINDS = {
    "round_robin": (round_robin_spec, lambda: dumped(round_robin_autogen())),
    "selector": (selector_spec, lambda: dumped(selector_autogen())),
    "swarm": (swarm_spec, lambda: dumped(swarm_autogen())),
    "single": (single_spec, single_autogen),
}


# -- export: AutoGen's own shape -------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
async def test_export_equals_autogens_own_dump_of_the_team_without_keys(client: httpx.AsyncClient, kind: str) -> None:
    spec, autogen = KINDS[kind]
    created = await create(client, spec())
    exported = await export(client, created["id"])
    assert exported == autogen()
    assert exported["config"]["name"] == created["name"]


async def test_export_names_registry_tools_and_never_embeds_their_code(client: httpx.AsyncClient) -> None:
    await create(client, round_robin_spec())
    writer = (await export(client, "duo"))["config"]["participants"][0]["config"]
    assert writer["metadata"] == {TOOLS: "calculator,current_time"}
    assert writer["workbench"][0]["config"]["tools"] == []
    text = json.dumps(writer)
    assert "FunctionTool" not in text and "source_code" not in text and "def calculator" not in text


async def test_export_of_azure_and_compatible_models_is_valid_autogen_config(client: httpx.AsyncClient) -> None:
    members = [agent("cloud", "azure_openai/prod-4o"), agent("local", "openai_compatible/llama3.1")]
    await create(client, team("mixed", members=members))
    participants = (await export(client, "mixed"))["config"]["participants"]
    azure = participants[0]["config"]["model_client"]
    # AutoGen cannot dump an Azure client without azure-core installed: compare with the class itself
    cls = AzureOpenAIChatCompletionClient
    assert azure["provider"] == cls.component_provider_override
    assert (azure["component_type"], azure["version"], azure["component_version"]) == (
        cls.component_type,
        cls.component_version,
        cls.component_version,
    )
    assert azure["label"] == cls.__name__
    assert azure["description"] == (cls.__doc__ or "").strip().split("\n\n")[0]
    config = AzureOpenAIClientConfigurationConfigModel.model_validate(azure["config"])
    assert (config.model, config.azure_deployment, config.azure_endpoint) == ("prod-4o", "prod-4o", AZURE_ENDPOINT)
    assert config.api_key is None
    local = participants[1]["config"]["model_client"]["config"]
    assert (local["model"], local["base_url"]) == ("llama3.1", COMPAT_URL)
    assert local["model_info"]["function_calling"] is True


async def test_export_resolves_stored_agents_and_the_default_model(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/agents", json=agent("helper", "openai/gpt-4o", description="Helps."))
    assert r.status_code == 201, r.text
    await create(client, team("refs", members=["helper", agent("plain", None)], max_messages=None))
    config = (await export(client, "refs"))["config"]
    helper, plain = (p["config"] for p in config["participants"])
    assert (helper["name"], helper["description"], helper["model_client"]["config"]["model"]) == (
        "helper",
        "Helps.",
        "gpt-4o",
    )
    # no model named: the server default (an OpenAI key is configured here)
    assert plain["model_client"]["config"]["model"] == "gpt-4o-mini"
    # no termination: the server's default limit, as a run would have it
    assert config["termination_condition"]["config"] == {"max_messages": 10, "include_agent_event": False}


async def test_export_of_an_unknown_team_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/teams/nobody/component"), 404, "team_not_found")


async def test_export_of_a_graph_team_is_422(client: httpx.AsyncClient) -> None:
    graph = team("flow", kind="graph", edges=[{"source": "writer", "target": "critic"}])
    await create(client, graph)
    r = await client.get("/v1/teams/flow/component")
    body = assert_field_error(r, ["team", "kind"], "component_unsupported")
    assert "graph" in body["errors"][0]["msg"]


async def test_export_of_a_team_whose_stored_agent_is_gone_is_422(client: httpx.AsyncClient) -> None:
    helper = await client.post("/v1/agents", json=agent("helper"))
    assert helper.status_code == 201
    await create(client, team("orphan", kind="single", members=["helper"]))
    assert (await client.delete(f"/v1/agents/{helper.json()['id']}")).status_code == 204
    assert_field_error(await client.get("/v1/teams/orphan/component"), ["team", "members", 0], "unknown_agent")


async def test_export_of_another_principals_team_is_404(app: FastAPI, client: httpx.AsyncClient) -> None:
    other = await api_key_headers(app, "mallory")
    assert_problem(await client.get("/v1/teams/demo/component", headers=other), 404, "team_not_found")


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
async def test_export_import_export_round_trips(client: httpx.AsyncClient, kind: str) -> None:
    spec, _ = KINDS[kind]
    original = await create(client, spec())
    first = await export(client, original["id"])
    copy_ = await imported(client, first, name="copy")
    assert copy_["name"] == "copy"
    assert copy_["id"] != original["id"]
    assert spec_of(copy_) == spec_of(original)
    assert spec_of((await client.get("/v1/teams/copy")).json()) == spec_of(original)
    again = await export(client, "copy")
    assert again["config"].pop("name") == "copy"
    assert first["config"].pop("name") == original["name"]
    assert again == first


async def test_azure_and_compatible_models_round_trip(client: httpx.AsyncClient) -> None:
    members = [
        agent("cloud", "azure_openai/prod-4o", model_options={"max_tokens": 50}),
        agent("local", "openai_compatible/llama3.1", model_options={"temperature": 0}),
    ]
    original = await create(client, team("mixed", members=members))
    copy_ = await imported(client, await export(client, "mixed"), name="mixed_copy")
    assert [m["model"] for m in copy_["members"]] == ["azure_openai/prod-4o", "openai_compatible/llama3.1"]
    assert spec_of(copy_) == spec_of(original)


async def test_the_demo_team_round_trips_on_the_fake_model(backend: Backend, tmp_path: Path) -> None:
    # a fresh install without keys: the demo team's agents use the fake default model
    async with serve_app(backend.settings(tmp_path)) as (_, bare):
        exported = await export(bare, "demo")
        writer = exported["config"]["participants"][0]["config"]
        assert writer["model_client"]["provider"] == "autogen_ext.models.replay.ReplayChatCompletionClient"
        assert writer["model_client"]["config"]["swarmdirector"] == {"model": "fake/default"}
        demo2 = await imported(bare, exported, name="demo2")
        demo = (await bare.get("/v1/teams/demo")).json()
        assert [m["model"] for m in demo2["members"]] == ["fake/default", "fake/default"]
        # the demo's members name no model; the copy names the default they resolved to
        for m in demo["members"]:
            m["model"] = "fake/default"
        assert spec_of(demo2) == spec_of(demo)


# -- import of AutoGen's own dumps ------------------------------------------------------------------


def real_round_robin() -> RoundRobinGroupChat:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key=DUMMY_KEY)
    planner = AssistantAgent("planner", model_client=client, system_message="Plan.")
    doer = AssistantAgent("doer", model_client=client, description="Does it.", model_client_stream=True)
    termination = MaxMessageTermination(6) | TextMentionTermination("TERMINATE")
    return RoundRobinGroupChat([planner, doer], termination_condition=termination)


def real_swarm() -> Swarm:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key=DUMMY_KEY)
    alice = AssistantAgent(
        "alice", model_client=client, handoffs=[Handoff(target="bob", description="Ask Bob."), "user"]
    )
    bob = AssistantAgent("bob", model_client=client, handoffs=["alice"])
    return Swarm([alice, bob], termination_condition=HandoffTermination(target="user") | MaxMessageTermination(10))


def real_selector() -> SelectorGroupChat:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key=DUMMY_KEY)
    a = AssistantAgent("a", model_client=client)
    b = AssistantAgent("b", model_client=client)
    return SelectorGroupChat([a, b], model_client=client, termination_condition=MaxMessageTermination(4))


def real_single() -> RoundRobinGroupChat:
    client = OpenAIChatCompletionClient(model="gpt-4o", api_key=DUMMY_KEY, temperature=0.2)
    return RoundRobinGroupChat(
        [AssistantAgent("solo", model_client=client)], termination_condition=MaxMessageTermination(2)
    )


AUTOGEN_DEFAULT_DESCRIPTION = "An agent that provides assistance with ability to use tools."


async def test_import_of_a_real_round_robin_dump(client: httpx.AsyncClient) -> None:
    component = real_round_robin().dump_component().model_dump(mode="json")
    created = await imported(client, component, name="from_autogen")
    assert created["kind"] == "round_robin"
    planner, doer = created["members"]
    assert planner == {
        "name": "planner",
        "kind": "assistant",
        "description": AUTOGEN_DEFAULT_DESCRIPTION,
        "system_message": "Plan.",
        "model": "openai/gpt-4o-mini",
        "model_options": None,
        "tools": [],
        "approve_tools": [],
        "handoffs": [],
        "streaming": False,
        "reflect_on_tool_use": False,
        "max_tool_iterations": 1,
    }
    # AutoGen's default system message is what the server gives an agent that names none
    assert (doer["system_message"], doer["description"], doer["streaming"]) == (None, "Does it.", True)
    assert created["termination"] == {
        "max_messages": 6,
        "text_mention": "TERMINATE",
        "timeout_s": None,
        "token_budget": None,
    }


async def test_import_of_a_real_swarm_dump_keeps_hand_offs_to_user(client: httpx.AsyncClient) -> None:
    created = await imported(client, real_swarm().dump_component().model_dump(mode="json"), name="sw")
    assert created["kind"] == "swarm"
    assert [m["handoffs"] for m in created["members"]] == [["bob", "user"], ["alice"]]
    # HandoffTermination(user) is implied by the hand-off to user; the limit stays
    assert created["termination"]["max_messages"] == 10
    exported = await export(client, "sw")
    assert exported["config"]["termination_condition"]["config"]["conditions"][1]["config"] == {"target": "user"}


async def test_import_of_a_real_selector_dump(client: httpx.AsyncClient) -> None:
    component = real_selector().dump_component().model_dump(mode="json")
    assert component["config"]["name"] == "SelectorGroupChat"
    created = await imported(client, component)
    assert created["name"] == "SelectorGroupChat"
    assert (created["kind"], created["selector_model"], created["allow_repeated_speaker"]) == (
        "selector",
        "openai/gpt-4o-mini",
        False,
    )
    # AutoGen's default prompt is the server's default too
    assert created["selector_prompt"] is None
    assert created["termination"]["max_messages"] == 4


async def test_import_of_a_real_one_agent_round_robin_of_two_messages_is_a_single_team(
    client: httpx.AsyncClient,
) -> None:
    created = await imported(client, real_single().dump_component().model_dump(mode="json"), name="one")
    assert created["kind"] == "single"
    assert created["termination"]["max_messages"] is None
    assert created["members"][0]["model_options"] == {"temperature": 0.2, "max_tokens": None, "script": None}


async def test_a_key_in_an_imported_component_is_never_stored_or_echoed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    component = real_round_robin().dump_component().model_dump(mode="json")
    assert DUMMY_KEY not in json.dumps(component)  # AutoGen masks it...
    for participant in component["config"]["participants"]:
        participant["config"]["model_client"]["config"]["api_key"] = DUMMY_KEY  # ...a pasted one is not
    assert DUMMY_KEY in json.dumps(component)
    created = await imported(client, component, name="keyed")
    assert_no_secrets((await client.get("/v1/teams/keyed")).text)
    assert_no_secrets((await client.get("/v1/teams", params={"limit": 200})).text)
    assert_no_secrets(json.dumps(await export(client, "keyed")))
    async with services_of(app).sessionmaker() as session:
        row = await session.get(Team, created["id"])
    assert row is not None
    assert_no_secrets(json.dumps(row.spec))
    # a refused import does not echo it either
    component["config"]["participants"][0]["provider"] = "my.module.Evil"
    r = await import_(client, component, name="keyed2")
    assert r.status_code == 422
    assert_no_secrets(r.text)


# -- model providers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_client", "expected"),
    [
        (openai_model("gpt-4o"), "openai/gpt-4o"),
        (openai_model("llama3.1", base_url=COMPAT_URL + "/"), "openai_compatible/llama3.1"),
        (openai_model("llama3.1", base_url="http://elsewhere:8000/v1"), "openai/llama3.1"),
        ({"provider": "OpenAIChatCompletionClient", "config": {"model": "gpt-4o"}}, "openai/gpt-4o"),
        (
            {
                "provider": "autogen_ext.models.openai.AzureOpenAIChatCompletionClient",
                "config": {"model": "gpt-4o", "azure_deployment": "prod-4o", "azure_endpoint": "https://x"},
            },
            "azure_openai/prod-4o",
        ),
        ({"provider": "azure_openai_chat_completion_client", "config": {"model": "gpt-4o"}}, "azure_openai/gpt-4o"),
        (
            {"provider": "autogen_ext.models.replay.ReplayChatCompletionClient", "config": {"chat_completions": []}},
            "fake/default",
        ),
    ],
)
async def test_model_clients_map_to_the_servers_providers(
    client: httpx.AsyncClient, model_client: dict[str, Any], expected: str
) -> None:
    created = await imported(client, rr_team(assistant("helper", model_client)))
    assert created["members"][0]["model"] == expected


async def test_replayed_replies_become_a_fake_script(client: httpx.AsyncClient) -> None:
    replay = {
        "provider": "autogen_ext.models.replay.ReplayChatCompletionClient",
        "config": {"chat_completions": ["One.", "Two."]},
    }
    created = await imported(client, rr_team(assistant("helper", replay)))
    assert created["members"][0]["model_options"]["script"] == [
        {
            "text": text,
            "reasoning": None,
            "tool_calls": None,
            "handoff": None,
            "error": None,
            "error_kind": "model_error",
            "hang": None,
            "delay_ms": None,
        }
        for text in ("One.", "Two.")
    ]


async def test_an_unconfigured_provider_is_refused_where_the_component_names_it(
    backend: Backend, tmp_path: Path
) -> None:
    async with serve_app(backend.settings(tmp_path)) as (_, bare):  # no keys: only the fake model
        component = rr_team(assistant("a", openai_model()), assistant("b", openai_model()))
        r = await import_(bare, component)
        assert_field_error(r, [*CONFIG, "participants", 0, "config", "model_client"], "unknown_model")
        assert "gallery" not in await team_names(bare)


# -- refused: code ---------------------------------------------------------------------------------


async def shout(text: str) -> str:
    """Shout the text."""
    return text.upper()


PWNED_ENV = "SWARMDIRECTOR_TEST_PWNED"


def booby_trapped_tool(marker: Path) -> dict[str, Any]:
    """A real FunctionTool dump whose source, if ever executed, writes ``marker`` and sets an env var."""
    tool = FunctionTool(shout, description="Shout.", name="shout").dump_component().model_dump(mode="json")
    tool["config"]["source_code"] = (
        f"import os, pathlib\nos.environ[{PWNED_ENV!r}] = 'pwned'\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        + tool["config"]["source_code"]
    )
    return dict(tool)


def agent_with_tool(tool: dict[str, Any]) -> dict[str, Any]:
    client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key=DUMMY_KEY)
    dumped_agent = AssistantAgent("helper", model_client=client).dump_component().model_dump(mode="json")
    dumped_agent["config"]["workbench"][0]["config"]["tools"] = [tool]
    return dict(dumped_agent)


async def test_a_function_tool_is_refused_and_its_source_never_runs(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PWNED_ENV, "clean")
    marker = tmp_path / "pwned.txt"
    tool = booby_trapped_tool(marker)
    component = rr_team(assistant("planner"), agent_with_tool(tool))

    r = await import_(client, component)

    loc = [*CONFIG, "participants", 1, "config", "workbench", 0, "config", "tools", 0, "provider"]
    body = assert_field_error(r, loc, "component_code_refused")
    assert len(body["errors"]) == 1
    assert not marker.exists()
    assert os.environ[PWNED_ENV] == "clean"
    assert "gallery" not in await team_names(client)

    # control: AutoGen's own loader would have run it
    with pytest.warns(UserWarning, match="execute code"):
        FunctionTool.load_component(tool)
    assert marker.read_text() == "ran"
    assert os.environ[PWNED_ENV] == "pwned"


async def test_a_function_tool_in_the_legacy_tools_field_is_refused(client: httpx.AsyncClient, tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    component = rr_team(assistant("helper", tools=[booby_trapped_tool(marker)]))
    r = await import_(client, component)
    assert_field_error(r, [*CONFIG, "participants", 0, "config", "tools", 0, "provider"], "component_code_refused")
    assert not marker.exists()


@pytest.mark.parametrize("key", ["source_code", "global_imports"])
async def test_code_fields_are_refused_anywhere(client: httpx.AsyncClient, key: str) -> None:
    component = rr_team(assistant("helper", **{key: "import os"}))
    r = await import_(client, component)
    assert_field_error(r, [*CONFIG, "participants", 0, "config", key], "component_code_refused")


async def test_a_code_executor_agent_is_refused(client: httpx.AsyncClient, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # AutoGen's own warnings about running code locally
        executor = LocalCommandLineCodeExecutor(work_dir=tmp_path / "work")
        coder = CodeExecutorAgent("coder", code_executor=executor)
    component = rr_team(assistant("planner"), coder.dump_component().model_dump(mode="json"))
    r = await import_(client, component)
    body = assert_field_error(r, [*CONFIG, "participants", 1, "provider"], "component_code_refused")
    assert "CodeExecutorAgent" in body["errors"][0]["msg"]
    assert len(body["errors"]) == 1  # its executor, inside it, was never read


# -- refused: foreign providers ----------------------------------------------------------------------

PROBE = "swarmdirector_probe_module"


@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a mark when imported."""
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{PROBE}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nclass Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


async def test_a_foreign_team_provider_is_refused_unimported(client: httpx.AsyncClient, probe_module: Path) -> None:
    component = {"provider": f"{PROBE}.Evil", "component_type": "team", "config": {"participants": []}}
    r = await import_(client, component, name="evil")
    body = assert_field_error(r, [*C, "provider"], "component_provider_refused")
    assert f"{PROBE}.Evil" in body["errors"][0]["msg"]
    assert PROBE not in sys.modules
    assert not probe_module.exists()
    assert "evil" not in await team_names(client)
    # control: importing it is what would have left the mark
    try:
        importlib.import_module(PROBE)
        assert probe_module.read_text() == "imported"
    finally:
        sys.modules.pop(PROBE, None)


async def test_foreign_agent_and_model_providers_are_refused_each_where_it_is(client: httpx.AsyncClient) -> None:
    evil_agent = {"provider": "my.module.Evil", "component_type": "agent", "config": {"name": "evil"}}
    anthropic = {
        "provider": "autogen_ext.models.anthropic.AnthropicChatCompletionClient",
        "config": {"model": "claude-3-5-sonnet"},
    }
    component = rr_team(assistant("a", anthropic), evil_agent)
    r = await import_(client, component)
    body = assert_problem(r, 422, "component_provider_refused")
    assert [e["loc"] for e in body["errors"]] == [
        [*CONFIG, "participants", 0, "config", "model_client", "provider"],
        [*CONFIG, "participants", 1, "provider"],
    ]
    assert {e["type"] for e in body["errors"]} == {"component_provider_refused"}


async def test_an_mcp_workbench_is_refused(client: httpx.AsyncClient) -> None:
    mcp = {
        "provider": "autogen_ext.tools.mcp.McpWorkbench",
        "component_type": "workbench",
        "config": {"server_params": {"type": "StdioServerParams", "command": "sh", "args": ["-c", "true"]}},
    }
    r = await import_(client, rr_team(assistant("helper", workbench=[mcp])))
    assert_field_error(
        r, [*CONFIG, "participants", 0, "config", "workbench", 0, "provider"], "component_provider_refused"
    )


# -- refused: malformed and unsupported ---------------------------------------------------------------


@pytest.mark.parametrize("missing", ["provider", "config"])
async def test_a_component_without_provider_or_config_is_422(client: httpx.AsyncClient, missing: str) -> None:
    component = rr_team()
    del component[missing]
    assert_field_error(await import_(client, component), [*C, missing], "missing", code="invalid_request")


def _drop(key: str) -> Any:
    def change(component: dict[str, Any]) -> None:
        del component["config"]["participants"][0][key]

    return change


def _set(path: list[Any], value: Any) -> Any:
    def change(component: dict[str, Any]) -> None:
        node = component
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


P0: list[Any] = ["config", "participants", 0]


@pytest.mark.parametrize(
    ("change", "loc", "type_"),
    [
        (_drop("config"), [*CONFIG, "participants", 0, "config"], "component_invalid"),
        (_drop("provider"), [*CONFIG, "participants", 0, "provider"], "component_invalid"),
        (_set(["config", "participants"], {"a": 1}), [*CONFIG, "participants"], "component_invalid"),
        (_set(["config", "participants"], []), [*CONFIG, "participants"], "component_invalid"),
        (
            _set([*P0, "config", "model_client"], "gpt-4o"),
            [*CONFIG, "participants", 0, "config", "model_client"],
            "component_invalid",
        ),
        (_set([*P0, "component_type"], "model"), [*CONFIG, "participants", 0, "component_type"], "component_invalid"),
        (_set([*P0, "config", "name"], 7), [*CONFIG, "participants", 0, "config", "name"], "component_invalid"),
        (
            _set([*P0, "component_version"], 9),
            [*CONFIG, "participants", 0, "component_version"],
            "component_unsupported",
        ),
        (_set(["config", "max_turns"], 5), [*CONFIG, "max_turns"], "component_unsupported"),
        (_set(P0, rr_team()), [*CONFIG, "participants", 0, "provider"], "component_unsupported"),
        (_set(P0, openai_model()), [*CONFIG, "participants", 0, "provider"], "component_unsupported"),
        (
            _set([*P0, "config", "memory"], [{}]),
            [*CONFIG, "participants", 0, "config", "memory"],
            "component_unsupported",
        ),
        (
            _set(
                [*P0, "config", "workbench"],
                {"provider": "autogen_core.tools.StaticWorkbench", "config": {"tools": [{"name": "x"}]}},
            ),
            [*CONFIG, "participants", 0, "config", "workbench", "config", "tools"],
            "component_unsupported",
        ),
        (
            _set([*P0, "config", "model_client", "config", "chat_completions"], [{"content": "x"}]),
            [*CONFIG, "participants", 0, "config", "model_client", "config", "chat_completions"],
            "component_unsupported",
        ),
    ],
    ids=[
        "participant-without-config",
        "participant-without-provider",
        "participants-not-a-list",
        "no-participants",
        "model-client-not-a-component",
        "wrong-component-type",
        "name-not-a-string",
        "newer-version",
        "max-turns",
        "nested-team",
        "model-where-an-agent-goes",
        "memory",
        "tools-in-a-workbench",
        "replayed-create-results",
    ],
)
async def test_malformed_or_unsupported_components_are_422_where_they_are(
    client: httpx.AsyncClient, change: Any, loc: list[Any], type_: str
) -> None:
    replay = {"provider": "autogen_ext.models.replay.ReplayChatCompletionClient", "config": {"chat_completions": []}}
    component = rr_team(assistant("helper", replay if "chat_completions" in loc else None))
    change(component)
    body = assert_field_error(await import_(client, component), loc, type_)
    assert body["errors"][0]["msg"]
    assert "gallery" not in await team_names(client)


def condition(provider: str, **config: Any) -> dict[str, Any]:
    return {"provider": f"autogen_agentchat.{provider}", "config": config}


def either(*conditions: dict[str, Any]) -> dict[str, Any]:
    return condition("base.OrTerminationCondition", conditions=list(conditions))


TC: list[Any] = [*CONFIG, "termination_condition"]


@pytest.mark.parametrize(
    ("termination", "loc"),
    [
        (
            condition("base.AndTerminationCondition", conditions=[max_messages(3), max_messages(4)]),
            [*TC, "provider"],
        ),
        (
            either(
                condition("conditions.TextMentionTermination", text="A"),
                condition("conditions.TextMentionTermination", text="B"),
            ),
            [*TC, "config", "conditions", 1, "config", "text"],
        ),
        (condition("conditions.TextMentionTermination", text="A", sources=["x"]), [*TC, "config", "sources"]),
        (condition("conditions.HandoffTermination", target="bob"), [*TC, "config", "target"]),
        (
            condition("conditions.TokenUsageTermination", max_total_token=9, max_prompt_token=5),
            [*TC, "config", "max_prompt_token"],
        ),
        (
            condition("conditions.MaxMessageTermination", max_messages=3, include_agent_event=True),
            [*TC, "config", "include_agent_event"],
        ),
        (condition("conditions.StopMessageTermination"), [*TC, "provider"]),
    ],
    ids=["and", "two-texts", "text-sources", "handoff-to-agent", "prompt-tokens", "agent-events", "stop-message"],
)
async def test_terminations_the_spec_cannot_express_are_422(
    client: httpx.AsyncClient, termination: dict[str, Any], loc: list[Any]
) -> None:
    r = await import_(client, rr_team(termination_condition=termination))
    body = assert_problem(r, 422, r.json()["code"])
    assert body["code"] in ("component_unsupported", "component_provider_refused")
    assert [e["loc"] for e in body["errors"]] == [loc]


async def test_or_conditions_flatten_and_the_strictest_limit_wins(client: httpx.AsyncClient) -> None:
    termination = either(
        either(max_messages(9), condition("conditions.TimeoutTermination", timeout_seconds=60)),
        either(max_messages(5), condition("conditions.TimeoutTermination", timeout_seconds=30.5)),
        condition("conditions.TextMentionTermination", text="STOP"),
        condition("conditions.TokenUsageTermination", max_total_token=500),
    )
    created = await imported(client, rr_team(assistant("a"), assistant("b"), termination_condition=termination))
    assert created["termination"] == {"max_messages": 5, "text_mention": "STOP", "timeout_s": 30.5, "token_budget": 500}


async def test_a_deeply_nested_component_is_a_problem_not_a_crash(client: httpx.AsyncClient) -> None:
    nested: dict[str, Any] = {"leaf": True}
    for _ in range(150):
        nested = {"x": nested}
    r = await import_(client, rr_team(assistant("helper", metadata=nested)))
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")


# -- validation errors point into the component ---------------------------------------------------------


async def test_an_unknown_tool_points_at_the_tools_metadata(client: httpx.AsyncClient) -> None:
    r = await import_(client, rr_team(assistant("helper", metadata={TOOLS: "calculator, shell"})))
    loc = [*CONFIG, "participants", 0, "config", "metadata", TOOLS, 1]
    body = assert_field_error(r, loc, "unknown_tool")
    assert "shell" in body["errors"][0]["msg"]


async def test_tools_named_in_metadata_are_imported(client: httpx.AsyncClient) -> None:
    created = await imported(client, rr_team(assistant("helper", metadata={TOOLS: "calculator, current_time"})))
    assert created["members"][0]["tools"] == ["calculator", "current_time"]


async def test_tools_that_need_approval_travel_in_metadata_and_are_checked(client: httpx.AsyncClient) -> None:
    metadata = {TOOLS: "calculator, current_time", APPROVE: "calculator"}
    created = await imported(client, rr_team(assistant("helper", metadata=metadata)))
    assert created["members"][0]["approve_tools"] == ["calculator"]
    helper = (await export(client, created["id"]))["config"]["participants"][0]["config"]
    assert helper["metadata"] == {TOOLS: "calculator,current_time", APPROVE: "calculator"}
    r = await import_(client, rr_team(assistant("helper", metadata={TOOLS: "calculator", APPROVE: "shell"})))
    loc = [*CONFIG, "participants", 0, "config", "metadata", APPROVE, 0]
    assert_field_error(r, loc, "approval_for_unknown_tool")


async def test_a_hand_off_to_a_stranger_points_at_the_hand_off(client: httpx.AsyncClient) -> None:
    component = rr_team(assistant("a", handoffs=["b", {"target": "stranger"}]), assistant("b"))
    component["provider"] = "autogen_agentchat.teams.Swarm"
    r = await import_(client, component)
    assert_field_error(r, [*CONFIG, "participants", 0, "config", "handoffs", 1], "unknown_handoff_target")


@pytest.mark.parametrize(
    ("component", "loc", "type_"),
    [
        (
            rr_team(assistant("a", openai_model(temperature=5))),
            [*CONFIG, "participants", 0, "config", "model_client", "config", "temperature"],
            "less_than_equal",
        ),
        (rr_team(termination_condition=max_messages(0)), [*TC, "config", "max_messages"], "greater_than_equal"),
        (rr_team(assistant("user")), [*CONFIG, "participants", 0, "config", "name"], "reserved_name"),
        (rr_team(assistant("a"), assistant("a")), [*CONFIG, "participants", 1, "config", "name"], "duplicate_member"),
        (rr_team(assistant("bad name")), [*CONFIG, "participants", 0, "config", "name"], "string_pattern_mismatch"),
        (rr_team(name="My Team"), [*CONFIG, "name"], "string_pattern_mismatch"),
        (rr_team(name=None), [*CONFIG, "name"], "component_invalid"),
    ],
    ids=["temperature", "max-messages", "reserved-name", "duplicate", "agent-name", "team-name", "no-team-name"],
)
async def test_spec_errors_point_into_the_component(
    client: httpx.AsyncClient, component: dict[str, Any], loc: list[Any], type_: str
) -> None:
    r = await import_(client, component)
    body = assert_problem(r, 422, r.json()["code"])
    matching = [e for e in body["errors"] if e["loc"] == loc]
    assert matching and matching[0]["type"] == type_, body["errors"]


async def test_a_selector_of_one_points_at_the_participants(client: httpx.AsyncClient) -> None:
    component = rr_team(assistant("a"), model_client=openai_model())
    component["provider"] = "autogen_agentchat.teams.SelectorGroupChat"
    assert_field_error(await import_(client, component), [*CONFIG, "participants"], "invalid_team")


async def test_the_requested_name_overrides_the_components(client: httpx.AsyncClient) -> None:
    created = await imported(client, rr_team(name="My Team"), name="mine")
    assert created["name"] == "mine"
    r = await import_(client, rr_team(), name="no spaces please")
    assert_field_error(r, ["body", "name"], "string_pattern_mismatch", code="invalid_request")


async def test_importing_onto_an_existing_name_is_409(client: httpx.AsyncClient) -> None:
    assert_problem(await import_(client, rr_team(), name="demo"), 409, "already_exists")
    assert len((await client.get("/v1/teams/demo")).json()["members"]) == 2


# -- OpenAPI -----------------------------------------------------------------------------------------------


async def test_both_operations_are_typed_in_openapi(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    imp = doc["paths"]["/v1/teams/import"]["post"]
    exp = doc["paths"]["/v1/teams/{team_id}/component"]["get"]
    assert imp["operationId"] == "import_team_component"
    assert exp["operationId"] == "export_team_component"
    assert "TeamImport" in json.dumps(imp["requestBody"])
    assert "TeamComponent" in json.dumps(exp["responses"]["200"])
    assert "TeamRead" in json.dumps(imp["responses"]["201"])
    schema = doc["components"]["schemas"]["TeamComponent"]
    assert set(schema["required"]) == {"provider", "config"}
    assert "422" in imp["responses"] and "422" in exp["responses"]
