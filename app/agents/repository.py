from __future__ import annotations

from sqlalchemy import select

from app.agents.models import Agent
from app.core.repository import Repository


class AgentRepository(Repository[Agent]):
    model = Agent
    label = "agent"

    async def by_names(self, principal_id: str, names: list[str]) -> dict[str, Agent]:
        if not names:
            return {}
        rows = await self.session.scalars(
            select(Agent).where(Agent.principal_id == principal_id, Agent.name.in_(names))
        )
        return {r.name: r for r in rows}
