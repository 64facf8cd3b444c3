"""The agent spec's public pieces: the fake model's script steps, as requests write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.agents.schemas import ScriptStep, ScriptToolCall


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"delay_ms": 5},
        {"text": "a", "error": "b"},
        {"text": "a", "handoff": "b"},
        {"handoff": "b", "tool_calls": [{"name": "x"}]},
        {"error": "e", "tool_calls": [{"name": "x"}]},
        {"text": "a", "tool_calls": [{"name": "x"}], "handoff": "b", "error": "e"},
    ],
)
def test_script_step_needs_exactly_one_action(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one of text, tool_calls, handoff, error"):
        ScriptStep.model_validate(data)


@pytest.mark.parametrize(
    "data",
    [
        {"text": "a", "delay_ms": -1},
        {"tool_calls": []},
        {"tool_calls": [{"name": ""}]},
        {"tool_calls": [{"name": "x", "arguments": [1, 2]}]},
        {"handoff": ""},
        {"txt": "typo"},
        {"text": "a", "extra": 1},
        {"error": "e", "error_kind": "fatal"},
    ],
)
def test_script_step_rejects_bad_fields(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ScriptStep.model_validate(data)


def test_script_step_parses_from_json_and_documents_fields() -> None:
    step = ScriptStep.model_validate_json('{"tool_calls": [{"name": "f", "arguments": {"a": 1}}], "delay_ms": 0}')
    assert step.tool_calls == [ScriptToolCall(name="f", arguments={"a": 1})]
    assert step.delay_ms == 0
    schema = ScriptStep.model_json_schema()
    for name in ("text", "tool_calls", "handoff", "error", "delay_ms"):
        assert schema["properties"][name].get("description"), name
    tool_schema = ScriptToolCall.model_json_schema()
    for name in ("name", "arguments"):
        assert tool_schema["properties"][name].get("description"), name
