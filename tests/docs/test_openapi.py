"""The OpenAPI document: the committed copy is current, and it is worth generating clients from."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.agents.schemas import AgentSpec
from app.core.openapi import TAGS, render
from app.core.openapi_examples import EXAMPLES
from app.core.settings import Settings
from app.main import create_app
from app.runs.event_schemas import EVENT_TYPES, EventPage, TypedRunEvent
from app.runs.schemas import InputCreate, RunCreate, RunRead
from app.teams.schemas import TeamRead, TeamSpec

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
# free-form JSON on purpose: a scripted fake tool call's arguments, an AutoGen component's own config
FREE_FORM = {
    ("ScriptToolCall", "arguments"),
    # a tool's arguments: the tool's own model shapes them (an approval request shows them, an edit gives them)
    ("ApprovalToolCall", "arguments"),
    ("InputReceivedData", "arguments"),
    ("InputCreate", "arguments"),
    ("ToolRead", "parameters"),  # a JSON schema: the tool's own
    ("TeamComponent", "config"),
    # AG-UI's own objects (its spec shapes them; the protocol's RunAgentInput reads them)
    *(("AguiRunAgentInput", field) for field in ("messages", "tools", "context", "resume")),
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_the_committed_document_is_the_apps(doc: dict[str, Any]) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(doc), "docs/openapi.json is stale: run `make openapi`"


def test_make_openapi_writes_the_apps_document(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    written = tmp_path / "openapi.json"
    result = CliRunner().invoke(cli, ["dev", "openapi", str(written)])
    assert result.exit_code == 0, result.output
    assert written.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")


async def test_the_served_document_is_the_committed_one(client: httpx.AsyncClient) -> None:
    served = (await client.get("/openapi.json")).json()
    assert served == json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_operations_have_stable_ids_tags_and_typed_answers(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", doc["info"]["version"])
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    tags = {t["name"] for t in doc["tags"]}
    assert tags >= {t["name"] for t in TAGS} and all(t["description"] for t in doc["tags"])
    assert tags == {tag for _, _, op in operations(doc) for tag in op["tags"]}, "every tag is used"
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", op["operationId"]), where
        assert len(op["tags"]) == 1 and op["tags"][0] in tags, where
        assert op.get("summary"), where
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert "$ref" in body["schema"], f"{where}: the request body has no named schema"
        for status, response in op["responses"].items():
            if status == "204":
                assert "content" not in response, where
            elif status.startswith("2"):
                content = response["content"]
                assert content, where
                for media, spec in content.items():
                    assert spec.get("schema"), f"{where} {status} {media}: untyped"
            elif status.startswith("4"):
                assert response["content"] == PROBLEM, f"{where} {status}: not a problem+json"
        if path.startswith(("/v1/", "/agui/")):
            assert "401" in op["responses"], f"{where}: every /v1 and AG-UI request is authenticated"
            assert "security" not in op, f"{where}: uses the document's security"
        else:
            assert op["security"] == [], f"{where}: probes need no key"
    assert doc["security"] == [{}, {"HTTPBearer": []}]


def walk(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((where, node))
        for key, value in node.items():
            found += walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += walk(value, f"{where}[{i}]")
    return found


def test_no_schema_is_a_bare_object(doc: dict[str, Any]) -> None:
    bare = []
    for name, schema in doc["components"]["schemas"].items():
        for where, node in walk(schema, name):
            if node.get("type") != "object" or "properties" in node:
                continue
            extra = node.get("additionalProperties")
            field = tuple(where.split(".")[::2][:2]) if ".properties." in where else ()
            if field not in FREE_FORM and not (isinstance(extra, dict) and extra):
                bare.append(where)
    assert bare == [], "objects with no declared shape"


def test_the_event_streams_are_documented_as_sse_with_the_event_union(doc: dict[str, Any]) -> None:
    union = doc["components"]["schemas"]["RunEvent"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(union["oneOf"]) == len(EVENT_TYPES)
    for operation_id in ("create_run_stream", "stream_run_events"):
        op = next(op for _, _, op in operations(doc) if op["operationId"] == operation_id)
        stream = op["responses"]["200"]["content"]["text/event-stream"]
        frames = stream["x-itemSchema"]["oneOf"]
        data_refs = [f["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[1] for f in frames]
        assert data_refs == ["RunEvent", "StreamLagged", "StreamClosing"]
        assert frames[0]["properties"]["event"]["enum"] == EVENT_TYPES
        assert "id" in frames[0]["required"] and "id" not in frames[1]["properties"]
        assert "stream.closing" in stream["schema"]["description"]
        assert stream["example"].startswith("id: 1\nevent: run.queued\ndata: {")
    # a generated client types the SSE route as a string: the JSON page is a route of its own
    events = next(op for _, _, op in operations(doc) if op["operationId"] == "stream_run_events")
    assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
    listed = next(op for _, _, op in operations(doc) if op["operationId"] == "list_run_events")
    page = listed["responses"]["200"]["content"]["application/json"]["schema"]
    assert page == {"$ref": "#/components/schemas/EventPage"}


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "create_run": RunCreate,
    "create_run_stream": RunCreate,
    "create_run_wait": RunCreate,
    "create_team": TeamSpec,
    "create_agent": AgentSpec,
    "provide_run_input": InputCreate,
}
RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    "create_run": RunRead,
    "create_run_wait": RunRead,
    "get_run": RunRead,
    "create_team": TeamRead,
    "list_run_events": EventPage,
}


def test_every_example_is_valid_for_its_operation(doc: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(doc)}
    checked = 0
    for operation_id, examples in EXAMPLES.items():
        if operation_id == "event_stream":
            continue
        op = by_id[operation_id]
        for example in examples.get("request", {}).values():
            REQUEST_MODELS[operation_id].model_validate(example["value"])
            checked += 1
        assert op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("examples") == (
            examples.get("request")
        )
        for status, example in examples.get("responses", {}).items():
            RESPONSE_MODELS[operation_id].model_validate(example)
            assert op["responses"][status]["content"]["application/json"]["example"] == example
            checked += 1
    for event in EXAMPLES["list_run_events"]["responses"]["200"]["data"]:
        TypedRunEvent.model_validate(event)
    assert checked >= 10
    assert set(REQUEST_MODELS) | set(RESPONSE_MODELS) <= set(by_id)
