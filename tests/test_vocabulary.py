"""One vocabulary of statuses and event types (``app/core/vocabulary.py``), and everything that
names them in step with it: the event schemas, the run schema, the docs and the chat page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from app.core import vocabulary
from app.core.envelope import STREAMED_TYPES, TERMINAL_TYPES
from app.runs.event_schemas import EVENT_MODELS, EVENT_TYPES
from app.runs.schemas import RunStatus

ROOT = Path(__file__).resolve().parents[1]


def test_every_event_type_has_exactly_one_schema_in_the_same_order() -> None:
    assert list(vocabulary.EVENT_TYPES) == EVENT_TYPES
    assert len(EVENT_MODELS) == len(vocabulary.EVENT_TYPES)


def test_the_run_schema_and_the_envelope_use_the_vocabulary() -> None:
    assert get_args(RunStatus) == vocabulary.RUN_STATUSES
    assert {"run.completed", "run.failed", "run.cancelled"} == TERMINAL_TYPES
    assert {"message.delta", "reasoning.delta"} == STREAMED_TYPES
    assert set(vocabulary.TERMINAL_STATUSES) | set(vocabulary.ACTIVE_STATUSES) == set(vocabulary.RUN_STATUSES)
    assert vocabulary.ACTIVE_STATUSES == ("queued", "running", "awaiting_input")


def test_the_docs_list_every_event_type_and_no_other() -> None:
    text = (ROOT / "docs" / "events.md").read_text("utf-8")
    table = text.split("## Types", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_.]+)` \|", table, re.MULTILINE)
    assert listed == list(vocabulary.EVENT_TYPES)


def test_the_chat_page_knows_the_same_terminal_statuses_and_events() -> None:
    js = ROOT / "app" / "static" / "js"
    statuses = re.search(r"TERMINAL_STATUSES = new Set\(\[([^\]]*)\]\)", (js / "view.js").read_text("utf-8"))
    assert statuses is not None
    assert set(re.findall(r'"([a-z_]+)"', statuses.group(1))) == set(vocabulary.TERMINAL_STATUSES)
    events = re.search(r"TERMINAL_EVENTS = \{([^}]*)\}", (js / "runs.js").read_text("utf-8"))
    assert events is not None
    assert set(re.findall(r'"([a-z_.]+)":', events.group(1))) == vocabulary.TERMINAL_TYPES
