"""Imports every model, so that ``Base.metadata`` describes the whole schema (alembic reads it).

Above every domain, since it names each domain's models; ``app/core/db.py`` keeps ``Base`` itself.
"""

from app.agents.models import Agent
from app.auth.models import ApiKey
from app.conversations.models import Conversation, Message
from app.core.db import Base
from app.runs.models import ModelCallRecord, Run, RunEvent
from app.teams.models import Team

__all__ = ["Agent", "ApiKey", "Base", "Conversation", "Message", "ModelCallRecord", "Run", "RunEvent", "Team"]
