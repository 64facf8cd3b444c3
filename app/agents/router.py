"""`/v1/agents`: stored, validated agent specs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.agents.models import Agent
from app.agents.repository import AgentRepository
from app.agents.schemas import AgentRead, AgentSpec
from app.api.deps import PrincipalDep, ServicesDep, SessionDep
from app.core.errors import problem_responses
from app.core.ids import new_id
from app.core.schemas import ListPage
from app.teams.service import SpecValidator, check_agent

router = APIRouter(prefix="/v1/agents", tags=["agents"])


def to_read(row: Agent) -> AgentRead:
    return AgentRead.model_validate(
        {**row.spec, "id": row.id, "created_at": row.created_at, "updated_at": row.updated_at}
    )


@router.post(
    "",
    name="create_agent",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 409, 422),
    summary="Create an agent",
)
async def create_agent(
    body: AgentSpec, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> AgentRead:
    check_agent(SpecValidator(services.models, services.tools), body)
    row = Agent(id=new_id("agt"), principal_id=principal.id, name=body.name, spec=body.model_dump(mode="json"))
    await AgentRepository(session).add(row)
    await session.commit()
    return to_read(row)


@router.get("", name="list_agents", summary="List agents", responses=problem_responses(400))
async def list_agents(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ListPage[AgentRead]:
    page = await AgentRepository(session).list(principal.id, limit=limit, cursor=cursor)
    return ListPage(data=[to_read(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/{agent_id}", name="get_agent", summary="Get an agent", responses=problem_responses(404))
async def get_agent(agent_id: str, session: SessionDep, principal: PrincipalDep) -> AgentRead:
    return to_read(await AgentRepository(session).get(principal.id, agent_id))


@router.put(
    "/{agent_id}",
    name="replace_agent",
    summary="Replace an agent's spec",
    responses=problem_responses(404, 409, 422),
)
async def replace_agent(
    agent_id: str, body: AgentSpec, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> AgentRead:
    repo = AgentRepository(session)
    row = await repo.get(principal.id, agent_id)
    check_agent(SpecValidator(services.models, services.tools), body)
    row.name = body.name
    row.spec = body.model_dump(mode="json")
    await repo.add(row)
    await session.commit()
    return to_read(row)


@router.delete(
    "/{agent_id}",
    name="delete_agent",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an agent",
    responses=problem_responses(404),
)
async def delete_agent(agent_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    repo = AgentRepository(session)
    await repo.delete(await repo.get(principal.id, agent_id))
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
