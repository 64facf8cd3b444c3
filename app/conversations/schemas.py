from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.runs.schemas import Usage


class ConversationRead(BaseModel):
    id: str = Field(examples=["conv_01JDAX3G4F6Q3C9W8R4T0M2N7B"])
    object: Literal["conversation"] = "conversation"
    title: str = Field(description="The first task, shortened.")
    team_id: str | None = Field(default=None, description="The stored team of its first run, if any.")
    message_count: int
    has_state: bool = Field(description="Whether the next run continues from saved team state.")
    created_at: datetime
    updated_at: datetime


class MessageRead(BaseModel):
    id: str = Field(description="The message id; equals the `message_id` of the deltas that streamed it.")
    object: Literal["message"] = "message"
    conversation_id: str
    run_id: str
    position: int = Field(description="1-based place in the conversation.")
    seq: int = Field(description="The seq of its `message.completed` event in its run.")
    agent: str = Field(description="Who wrote it: an agent name, or `user` for a task.")
    type: str = Field(description="AutoGen message type, e.g. `TextMessage`, `HandoffMessage`.")
    text: str
    usage: Usage
    created_at: datetime


class MessagePage(BaseModel):
    data: list[MessageRead]
    next_after: int | None = Field(
        default=None, description="Pass as `after` to read the next page; absent on the last page."
    )
