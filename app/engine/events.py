"""Translates AutoGen's stream items into SwarmDirector event types and payloads.

Streamed chunks are not here: the run meets them first, on its per-token path
(``app/runtime/run/tokens.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autogen_agentchat.messages import (
    BaseChatMessage,
    HandoffMessage,
    SelectSpeakerEvent,
    StopMessage,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)

from app.core.vocabulary import EventType
from app.engine.calls import usage_estimated

Translated = list[tuple[EventType, dict[str, Any]]]


@dataclass(slots=True)
class CompletedMessage:
    """A chat message to store; the translator's caller gives it a position and a seq."""

    id: str
    agent: str
    type: str
    text: str
    payload: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool = False


def message_text(message: BaseChatMessage | ThoughtEvent) -> str:
    if isinstance(message, HandoffMessage | ThoughtEvent):
        return message.content
    return message.to_model_text()


def completed_message(message: BaseChatMessage | ThoughtEvent) -> CompletedMessage:
    """A chat message, or a thought said before tool calls (``ThoughtEvent``), as a message to store."""
    usage = message.models_usage
    return CompletedMessage(
        id=message.id,
        agent=message.source,
        type=type(message).__name__,
        text=message_text(message),
        payload=message.model_dump(mode="json"),
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        usage_estimated=usage_estimated(usage),
    )


def message_completed_data(m: CompletedMessage, position: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens}
    if m.usage_estimated:
        usage["estimated"] = True
    return {
        "message_id": m.id,
        "agent": m.agent,
        "type": m.type,
        "text": m.text,
        "position": position,
        "usage": usage,
    }


def translate_event(item: object, agents: frozenset[str]) -> Translated:
    """Events other than chat messages and streamed chunks (those the caller handles itself)."""
    if isinstance(item, ToolCallRequestEvent):
        return [
            ("tool.call", {"agent": item.source, "call_id": c.id, "name": c.name, "arguments": c.arguments})
            for c in item.content
        ]
    if isinstance(item, ToolCallExecutionEvent):
        return [
            (
                "tool.result",
                {
                    "agent": item.source,
                    "call_id": r.call_id,
                    "name": r.name,
                    "content": r.content,
                    "is_error": bool(r.is_error),
                },
            )
            for r in item.content
        ]
    if isinstance(item, SelectSpeakerEvent):
        return [("speaker.selected", {"agents": list(item.content)})]
    return []


def is_stored_message(item: object) -> bool:
    return isinstance(item, BaseChatMessage) and not isinstance(item, StopMessage)


def handoff_data(message: HandoffMessage) -> dict[str, Any]:
    return {"message_id": message.id, "source": message.source, "target": message.target}
