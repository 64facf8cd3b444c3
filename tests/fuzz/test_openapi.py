"""Schemathesis against the live `/openapi.json`: no 5xx, and every response matches its schema; and the
document is valid OpenAPI 3.1.

Bounded and repeatable: two fixed seeds, each through every operation (a fixed number of examples per
operation) and through the stateful phase (sequences that feed one response's ids into the next
request: create a team, run it, read its events, cancel it, ...). The server is a real uvicorn in a closed
configuration (keys required), and the fuzzer sends a valid key, so the authenticated paths are what
gets fuzzed. Time limits are small so that a generated run that waits (for a person, or on a slow fake
model) ends within seconds. The whole file runs in about a minute.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import BaseSchema, Case, CheckFunction, Response
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.core.settings import Settings
from app.main import create_app
from tests.conftest import LiveServer, make_settings
from tests.security.conftest import create_key

SEEDS = (20261124, 4022)
# the document does not depend on settings
DOCUMENT = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
STREAM = "text/event-stream"


def streams(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every event stream media type of the document, by operationId."""
    for item in doc["paths"].values():
        for operation in item.values():
            for response in operation["responses"].values():
                if STREAM in response.get("content", {}):
                    yield operation["operationId"], response["content"][STREAM]


def read_as_3_2(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with each stream's frames under OpenAPI 3.2's ``itemSchema``, where schemathesis reads them.

    The served document is 3.1, which has no ``itemSchema``: it carries the frames as ``x-itemSchema``.
    Without them schemathesis would hold each frame to ``schema``: the stream as one string.
    """
    doc = copy.deepcopy(doc)
    for _, media in streams(doc):
        if "x-itemSchema" in media:  # our own event streams (AG-UI's frames are the protocol's)
            media["itemSchema"] = media.pop("x-itemSchema")
    return doc


def fuzzed(seed: int) -> BaseSchema:
    # loaded eagerly (schemathesis' lazy loader needs pytest < 9); the coverage phase would add hundreds of
    # cases per operation whatever `max_examples` says
    config = SchemathesisConfig.from_dict({"seed": seed, "phases": {"coverage": {"enabled": False}}})
    return schemathesis.openapi.from_dict(read_as_3_2(DOCUMENT), config=config)


SCHEMAS = {seed: fuzzed(seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    server_settings = make_settings(
        tmp_path_factory.mktemp("openapi"),
        auth_required=True,
        run_timeout_s=1,
        max_run_timeout_s=1,
        input_timeout_s=0.5,
        max_runs_per_minute=10_000,
        max_live_runs_per_principal=10_000,
    )
    with LiveServer(server_settings) as server:
        headers = create_key(server_settings.database_url, "local")
        # a finished run from the start: the stateful phase reads its events whichever test runs first
        seed_run = {"team_id": "demo", "task": "Something to read back."}
        httpx.post(f"{server.url}/v1/runs/wait", json=seed_run, headers=headers, timeout=30).raise_for_status()
        yield server, headers


# what the contract promises; "schema-valid data is accepted" is not among them (an unknown model or
# tool name is schema-valid and still a 422)
CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def checks_for(case: Case) -> list[CheckFunction]:
    documented = case.operation.definition.raw.get("responses", {})
    if "requestBody" in case.operation.definition.raw and "400" not in documented:
        # a body that is not JSON is a 400 `malformed_json` the document must list (see the last test)
        return [c for c in CHECKS if c is not status_code_conformance]
    return CHECKS


def operations_test(schema: BaseSchema) -> Callable[..., None]:
    @schema.parametrize()
    @settings(
        max_examples=8,
        derandomize=True,  # the schema's seed wins over it: each seed gives its own repeatable examples
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def test(case: Case, fuzz_server: tuple[LiveServer, dict[str, str]]) -> None:
        server, headers = fuzz_server
        response = case.call_and_validate(base_url=server.url, headers=headers, timeout=30, checks=checks_for(case))
        if response.status_code == 400:
            assert response.headers["content-type"][0].startswith("application/problem+json")

    return test


test_every_operation_first_seed = operations_test(SCHEMAS[SEEDS[0]])
test_every_operation_second_seed = operations_test(SCHEMAS[SEEDS[1]])


@pytest.mark.parametrize("seed", SEEDS)
def test_stateful_sequences_meet_the_contract(seed: int, fuzz_server: tuple[LiveServer, dict[str, str]]) -> None:
    server, headers = fuzz_server
    statuses: list[int] = []
    linked: list[str] = []  # steps that used a value an earlier response gave
    failures: list[str] = []

    class LiveWorkflow(SCHEMAS[seed].as_state_machine()):  # type: ignore[misc]
        rule_order_seed = seed

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": server.url, "headers": headers, "timeout": 30}

        def step(self, input: Any) -> Any:
            if input.transition is not None and input.applied_parameters:
                linked.append(input.case.operation.label)
            return super().step(input)

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            statuses.append(response.status_code)
            try:
                case.validate_response(response, checks=checks_for(case), transport_kwargs=kwargs)
            except Exception as exc:
                failures.append(f"{case.operation.label} -> {response.status_code}: {exc}")
                raise

    # The server's state outlives a scenario, so a prefix Hypothesis replays may offer other steps (the
    # ids a list returns have changed): `Flaky`. Schemathesis' own runner ends the phase there, as a pass
    # unless a check failed; so does this test, and a check that failed is in `failures`.
    with contextlib.suppress(Flaky):
        hypothesis.seed(seed)(LiveWorkflow).run(
            settings=settings(
                max_examples=40,
                stateful_step_count=10,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    assert failures == []
    # sequences, not single calls: many steps, a good part of them on what an earlier response gave, the
    # run reads among them
    assert len(statuses) >= 40 and len(linked) >= 20, (statuses, linked)
    assert any(label.startswith("GET /v1/runs/{run_id}") for label in linked), linked


def test_the_fuzzed_document_is_the_one_the_server_serves(fuzz_server: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = fuzz_server
    # (the fuzzer reads it through `read_as_3_2`, and adds to its copy the links it infers)
    assert httpx.get(server.url + "/openapi.json").json() == DOCUMENT


def test_the_served_document_is_valid_openapi_3_1(fuzz_server: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = fuzz_server
    served = httpx.get(server.url + "/openapi.json").json()
    assert served["openapi"].startswith("3.1.")
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV31SpecValidator(served).iter_errors()
    ]
    assert errors == []
    # the frames of each stream are described, as an extension: 3.1 refuses `itemSchema` itself
    described = {operation for operation, media in streams(served) if "x-itemSchema" in media}
    assert described == {"create_run_stream", "stream_run_events"}
    assert {operation for operation, _ in streams(served)} == described | {"agui_run", "agui_reconnect"}  # AG-UI's own
    refused = list(OpenAPIV31SpecValidator(read_as_3_2(served)).iter_errors())
    assert len(refused) == 2 and all("'itemSchema' was unexpected" in e.message for e in refused)


def test_every_operation_with_a_body_documents_the_400_for_malformed_json() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if "requestBody" in operation:
                assert "400" in operation["responses"], f"{method.upper()} {path}"
