"""``row_values``: a new object's columns for a Core insert, every one given, by column name."""

from __future__ import annotations

import pytest

from app.conversations.models import Conversation
from app.core.db import utcnow
from app.core.repository import row_values


def test_every_column_by_its_name_and_a_missing_one_is_an_error() -> None:
    now = utcnow()
    full = Conversation.started(id="conv_1", principal_id="p", title="t", team_id=None, at=now)
    values = row_values(full)
    assert values["id"] == "conv_1" and values["created_at"] == now and values["state"] is None
    assert set(values) == {c.key for c in Conversation.__table__.columns}
    # a default the unit of work would have applied is not applied here: leaving it out is refused
    with pytest.raises(ValueError, match="message_count"):
        row_values(Conversation(id="conv_2", principal_id="p", title="t", created_at=now, updated_at=now))
