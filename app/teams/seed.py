"""The ready-made `demo` team a fresh install starts with."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import LOCAL_PRINCIPAL
from app.core.errors import Conflict
from app.core.ids import new_id
from app.teams.models import Team
from app.teams.repository import TeamRepository
from app.teams.schemas import TeamSpec

DEMO_TEAM = TeamSpec.model_validate(
    {
        "name": "demo",
        "kind": "round_robin",
        "description": "A writer drafts, a critic reviews; they take turns.",
        "members": [
            {
                "name": "writer",
                "description": "Writes and revises the text.",
                "system_message": "You are a concise writer. Write or revise the text the task asks for.",
            },
            {
                "name": "critic",
                "description": "Reviews the writer's text.",
                "system_message": (
                    "You are a constructive critic. Point out the two most important improvements. "
                    "When the text is good, reply APPROVED."
                ),
            },
        ],
        "termination": {"max_messages": 5, "text_mention": "APPROVED"},
    }
)


async def seed_demo_team(session: AsyncSession, principal_id: str = LOCAL_PRINCIPAL) -> bool:
    """Create the demo team unless one of that name exists; True when created."""
    repo = TeamRepository(session)
    if await repo.by_name(principal_id, DEMO_TEAM.name) is not None:
        return False
    try:
        await repo.add(
            Team(
                id=new_id("team"),
                principal_id=principal_id,
                name=DEMO_TEAM.name,
                spec=DEMO_TEAM.model_dump(mode="json"),
            )
        )
    except Conflict:
        # another replica starting at the same moment created it first
        await session.rollback()
        return False
    await session.commit()
    return True
