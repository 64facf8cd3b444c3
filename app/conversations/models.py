"""A durable thread: its messages and the AutoGen team state that continues it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime, utcnow


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal_id: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    team_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # AutoGen's save_state() of the last run, and the team shape it belongs to
    state: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    state_signature: Mapped[str | None] = mapped_column(String(200), default=None)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    # distributed mode: the run that holds the conversation's turn (claimed, not yet finished)
    active_run_id: Mapped[str | None] = mapped_column(String(40), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @classmethod
    def started(cls, *, id: str, principal_id: str, title: str, team_id: str | None, at: datetime) -> Conversation:
        """A new conversation with every column given (``new_row`` writes it without the unit of work)."""
        return cls(
            id=id,
            principal_id=principal_id,
            title=title,
            team_id=team_id,
            state=None,
            state_signature=None,
            message_count=0,
            active_run_id=None,
            created_at=at,
            updated_at=at,
        )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_position", "conversation_id", "position"),
        Index("ix_messages_principal_created", "principal_id", "created_at"),
    )

    # AutoGen's own message id: the `message_id` of the deltas that streamed it
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    principal_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
