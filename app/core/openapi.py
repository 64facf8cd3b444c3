"""The OpenAPI document as clients should see it.

FastAPI documents errors with its own schema under ``application/json``;
this server answers every error with ``application/problem+json`` and the
``Problem`` schema, so the document is rewritten to say so. Schemas only
referenced from streaming responses (the event envelope) are added.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.core.errors import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def install_openapi(app: FastAPI, extra_models: list[type[BaseModel]]) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in extra_models:
            _add_model(schemas, model)
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    if status.startswith(("4", "5")):
                        response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
                        if status == "422":
                            response["description"] = "Invalid request: the fields at fault are in `errors`."
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
