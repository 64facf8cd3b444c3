from __future__ import annotations

from app.core.errors import NotFound
from app.core.repository import Repository
from app.teams.models import Team


class TeamRepository(Repository[Team]):
    model = Team
    label = "team"

    async def by_name(self, principal_id: str, name: str) -> Team | None:
        team: Team | None = await self.session.scalar(self._owned(principal_id).where(Team.name == name))
        return team

    async def get_by_id_or_name(self, principal_id: str, ref: str) -> Team:
        team: Team | None = await self.session.scalar(self._owned(principal_id).where(Team.id == ref))
        if team is None:
            team = await self.by_name(principal_id, ref)
        if team is None:
            raise NotFound(f"No team with id or name '{ref}'.", code="team_not_found")
        return team
