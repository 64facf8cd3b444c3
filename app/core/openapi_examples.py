"""Examples for the OpenAPI document, by ``operationId``.

Kept apart from the routers so that the document's examples read as one set;
``tests/docs/test_openapi.py`` validates every one against its schema, so an
example cannot drift from the API it shows.
"""

from __future__ import annotations

import json
from typing import Any

_RUN = {
    "id": "run_01JDAX3G4F6Q3C9W8R4T0M2N7B",
    "object": "run",
    "status": "succeeded",
    "conversation_id": "conv_01JDAX3G4D2S1N8M5K7P9Q3R6T",
    "team_id": "team_01JDAWZP1B7M3K9Q2V6X8T4R5N",
    "team_name": "demo",
    "task": "Write a haiku about the sea.",
    "if_busy": "reject",
    "timeout_s": 600.0,
    "input_timeout_s": 300.0,
    "metadata": {"source": "docs"},
    "stop_reason": "Text 'APPROVED' mentioned",
    "error": None,
    "usage": {"prompt_tokens": 412, "completion_tokens": 96, "total_tokens": 508},
    "message_count": 4,
    "last_seq": 57,
    "result": {
        "message_id": "5b0c7d0e-7a51-4a57-9f0a-3c1f2a9e8d41",
        "agent": "critic",
        "text": "APPROVED",
    },
    "created_at": "2026-11-24T10:00:00.123000Z",
    "started_at": "2026-11-24T10:00:00.140000Z",
    "finished_at": "2026-11-24T10:00:03.870000Z",
}

_QUEUED_RUN = {
    **_RUN,
    "status": "queued",
    "stop_reason": None,
    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    "message_count": 0,
    "last_seq": 0,
    "result": None,
    "started_at": None,
    "finished_at": None,
}

_TEAM = {
    "name": "duo",
    "kind": "round_robin",
    "description": "A planner and a doer.",
    "members": [
        {"name": "planner", "system_message": "Plan the steps.", "model": "openai/gpt-4o-mini"},
        {"name": "doer", "system_message": "Carry out the plan.", "tools": ["calculator"]},
    ],
    "termination": {"max_messages": 6, "text_mention": "DONE"},
}

_EVENTS = [
    {
        "run_id": _RUN["id"],
        "seq": 1,
        "type": "run.queued",
        "at": "2026-11-24T10:00:00.123Z",
        "data": {"conversation_id": _RUN["conversation_id"], "team": "demo", "task": _RUN["task"]},
    },
    {
        "run_id": _RUN["id"],
        "seq": 2,
        "type": "run.started",
        "at": "2026-11-24T10:00:00.140Z",
        "data": {"team": "demo", "agents": ["critic", "writer"]},
    },
    {
        "run_id": _RUN["id"],
        "seq": 3,
        "type": "message.completed",
        "at": "2026-11-24T10:00:00.152Z",
        "data": {
            "message_id": "8c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            "agent": "user",
            "type": "TextMessage",
            "text": _RUN["task"],
            "position": 1,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        },
    },
    {
        "run_id": _RUN["id"],
        "seq": 4,
        "type": "message.delta",
        "at": "2026-11-24T10:00:00.410Z",
        "data": {"message_id": "0d9e3a57-61a4-4a8e-b0a8-4f5c9b7e2c10", "agent": "writer", "text": "Waves "},
    },
]

_RUN_REQUESTS: dict[str, Any] = {
    "stored_team": {
        "summary": "A stored team, by name",
        "value": {"team_id": "demo", "task": "Write a haiku about the sea.", "metadata": {"source": "docs"}},
    },
    "inline_team": {
        "summary": "An inline team",
        "value": {
            "team": {
                "name": "pair",
                "members": [
                    {"name": "writer", "model": "fake/t12-d20"},
                    {"name": "critic", "model": "fake/t12-d20"},
                ],
                "termination": {"max_messages": 4},
            },
            "task": "Write a haiku about rivers.",
        },
    },
    "continue_conversation": {
        "summary": "Continue a conversation, queueing behind a run still going",
        "value": {
            "team_id": "demo",
            "task": "Now make it rhyme.",
            "conversation_id": _RUN["conversation_id"],
            "if_busy": "enqueue",
        },
    },
}

EXAMPLES: dict[str, Any] = {
    "create_run": {
        "request": _RUN_REQUESTS,
        "responses": {"202": _QUEUED_RUN},
    },
    "create_run_stream": {"request": _RUN_REQUESTS},
    "create_run_wait": {"request": _RUN_REQUESTS, "responses": {"200": _RUN}},
    "get_run": {"responses": {"200": _RUN}},
    "create_team": {
        "request": {"round_robin": {"summary": "Two agents taking turns", "value": _TEAM}},
        "responses": {
            "201": {
                **_TEAM,
                "id": "team_01JDAWZP1B7M3K9Q2V6X8T4R5N",
                "object": "team",
                "selector_model": None,
                "selector_prompt": None,
                "allow_repeated_speaker": False,
                "created_at": "2026-11-24T09:58:00.000000Z",
                "updated_at": "2026-11-24T09:58:00.000000Z",
            }
        },
    },
    "create_agent": {
        "request": {
            "assistant": {
                "summary": "An assistant with a tool",
                "value": {
                    "name": "accountant",
                    "system_message": "Answer with exact figures; use the calculator.",
                    "model": "openai/gpt-4o-mini",
                    "tools": ["calculator"],
                },
            },
            "person": {
                "summary": "A person in the loop",
                "value": {"name": "human", "kind": "user_proxy", "description": "Approves the plan."},
            },
        }
    },
    "provide_run_input": {
        "request": {
            "answer": {
                "summary": "Answer an input request",
                "value": {"request_id": "5f2d8c1e-3b7a-4f6e-9a0d-2c4b6e8f1a3c", "content": "Yes, go ahead."},
            }
        }
    },
    "list_run_events": {"responses": {"200": {"data": _EVENTS, "last_seq": 4, "has_more": True}}},
    "event_stream": "".join(
        f"id: {e['seq']}\nevent: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n" for e in _EVENTS
    ),
}
