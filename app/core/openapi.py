"""The OpenAPI document as clients should see it, and its export to ``docs/openapi.json``.

FastAPI's own document is close; this module finishes it for generated clients:
errors as ``application/problem+json`` with the ``Problem`` schema (FastAPI would
say ``application/json`` and its own validation schema), authentication as
optional (an open server needs no key), ``401`` where a key is checked, list
pages under plain names, the run event union and the SSE stream notices as
components, tags and examples. The export is ``swarmdirector dev openapi
docs/openapi.json`` (``make openapi``, in ``app/cli/dev.py``: built from the app, above
this layer); a test fails when the committed copy differs from the app's live document.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.core.errors import PROBLEM_JSON
from app.core.openapi_examples import EXAMPLES

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
SCHEMAS = "#/components/schemas/"

TAGS: list[dict[str, Any]] = [
    {"name": "runs", "description": "Start runs, stream and replay their events, cancel them, answer their input."},
    {"name": "teams", "description": "Named, validated team specs: kind, members, termination."},
    {"name": "agents", "description": "Named, validated agent specs, usable by name in teams."},
    {"name": "conversations", "description": "Durable threads: their messages, in order, across runs."},
    {"name": "models", "description": "The configured model providers, the default model and the tool registry."},
    {"name": "tools", "description": "The tools agents may name: their argument schemas, and which need approval."},
    {"name": "analytics", "description": "Runs, messages, tokens, latency and failures per agent, team and time."},
    {"name": "ops", "description": "Liveness and readiness probes."},
]

_EVENT_STREAM_DESCRIPTION = (
    "Server-Sent Events. Each run event is one frame: `id: <seq>`, `event: <type>`, `data: <RunEvent JSON>`; "
    "the stream ends after the terminal event (`run.completed`, `run.failed` or `run.cancelled`). Two notices "
    "about the stream itself have no `id` and are never stored: `event: stream.lagged` (`StreamLagged`: this "
    "watcher fell behind and was re-attached; nothing to do) and `event: stream.closing` (`StreamClosing`: the "
    "server is stopping, or cannot read the database: see its `reason`; resume after `last_seq`). "
    "`: ping` comments keep an idle stream open. Resume with "
    "`Last-Event-ID` or `?after=`."
)

_LIST_PAGE = re.compile(r"^ListPage_(\w+?)(Read)?_$")


def _frame(event: dict[str, Any], data_ref: str, *, with_id: bool, retry: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": event,
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": data_ref}},
    }
    required = ["event", "data"]
    if with_id:
        properties["id"] = {"type": "string", "description": "The event's `seq`."}
        required.insert(0, "id")
    if retry:
        properties["retry"] = {"type": "integer", "minimum": 0, "description": "Reconnect delay in ms."}
    return {"type": "object", "required": required, "properties": properties}


def event_stream_content(event_types: list[str]) -> dict[str, Any]:
    """The ``text/event-stream`` media type of a run's event stream.

    ``schema`` says what a 3.1 client sees (text); ``x-itemSchema`` describes each frame and its
    JSON ``data``. It is OpenAPI 3.2's ``itemSchema`` (which FastAPI writes for its own SSE
    routes) as an extension: 3.1 allows no other key there, and the generators read 3.1.
    """
    return {
        "schema": {"type": "string", "description": _EVENT_STREAM_DESCRIPTION},
        "x-itemSchema": {
            "oneOf": [
                _frame({"type": "string", "enum": event_types}, SCHEMAS + "RunEvent", with_id=True),
                _frame({"const": "stream.lagged"}, SCHEMAS + "StreamLagged", with_id=False),
                _frame({"const": "stream.closing"}, SCHEMAS + "StreamClosing", with_id=False, retry=True),
            ]
        },
        "example": EXAMPLES["event_stream"],
    }


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}", mode="serialization")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMAS) and ref[len(SCHEMAS) :] in renames:
            node["$ref"] = SCHEMAS + renames[ref[len(SCHEMAS) :]]
        for value in node.values():
            _rename_refs(value, renames)
    elif isinstance(node, list):
        for value in node:
            _rename_refs(value, renames)
    return node


def _rename_list_pages(doc: dict[str, Any]) -> None:
    """``ListPage_RunRead_`` -> ``RunList``: a generated client's class names are the schema names."""
    schemas = doc["components"]["schemas"]
    renames = {}
    for name in list(schemas):
        match = _LIST_PAGE.match(name)
        if match:
            renames[name] = match.group(1) + "List"
    for old, new in renames.items():
        schema = schemas.pop(old)
        schema["title"] = new
        plural = new.removesuffix("List").lower() + "s"
        schema["description"] = f"A page of {plural}, newest first; pass `next_cursor` as `cursor` for the next."
        schemas[new] = schema
    _rename_refs(doc, renames)


def _is_problem(response: dict[str, Any]) -> bool:
    content = response.get("content", {})
    if PROBLEM_JSON in content:
        return True
    schema = content.get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == SCHEMAS + "HTTPValidationError")


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": dict(PROBLEM_REF)}}}


def _finish_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in responses.items():
        if status.startswith(("4", "5")) and _is_problem(response):
            response["content"] = {PROBLEM_JSON: {"schema": dict(PROBLEM_REF)}}
            if status == "422":
                response["description"] = "Invalid request: the fields at fault are in `errors`."
    # a route that takes the caller declares the bearer scheme (``get_principal``): every /v1 route does,
    # through the middleware (app.auth.middleware), and a protocol view's routes do
    declared = bool(operation.pop("security", None))
    authenticated = path.startswith("/v1/") or declared
    if authenticated:
        # the document's own `security` covers it
        responses.setdefault("401", _problem("No valid API key: missing where keys are required, unknown or revoked."))
    else:
        operation["security"] = []
    if "requestBody" in operation:
        responses.setdefault("413", _problem("The body is larger than `SWARM_MAX_BODY_BYTES`."))
        responses.setdefault("400", _problem("The body is not JSON (`malformed_json`)."))
    operation["responses"] = dict(sorted(responses.items()))
    examples = EXAMPLES.get(operation.get("operationId", ""), {})
    if "request" in examples:
        media = operation["requestBody"]["content"]["application/json"]
        media["examples"] = examples["request"]
    for status, example in examples.get("responses", {}).items():
        media = responses[status].get("content", {}).get("application/json")
        if media is not None:  # a response with no JSON body shows no JSON example
            media["example"] = example


def build_openapi(app: FastAPI, extra_models: list[type[BaseModel]]) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary="Run AutoGen multi-agent teams and stream their work live over SSE and WebSocket.",
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags or TAGS,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in extra_models:
        _add_model(schemas, model)
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            _finish_operation(path, operation)
    # a key, or none where the server accepts requests without one (an open server on loopback): declared
    # once for the document, so that generated clients take a key or none. The probes opt out.
    doc["security"] = [{}, {"HTTPBearer": []}]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _rename_list_pages(doc)
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    return doc


def install_openapi(app: FastAPI, extra_models: list[type[BaseModel]]) -> None:
    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = build_openapi(app, extra_models)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def render(doc: dict[str, Any]) -> str:
    """The committed form: indented, key order kept, a final newline (stable diffs)."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
