"""`/v1/teams`: stored, validated team specs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.agents.repository import AgentRepository
from app.api.deps import PrincipalDep, ServicesDep, SessionDep
from app.core.errors import problem_responses
from app.core.ids import new_id
from app.core.schemas import ListPage
from app.teams.component_export import ComponentExporter
from app.teams.component_import import ComponentImporter
from app.teams.models import Team
from app.teams.repository import TeamRepository
from app.teams.schemas import TeamComponent, TeamImport, TeamRead, TeamSpec
from app.teams.service import SpecValidator, TeamResolver

router = APIRouter(prefix="/v1/teams", tags=["teams"])


def to_read(row: Team) -> TeamRead:
    return TeamRead.model_validate(
        {**row.spec, "id": row.id, "created_at": row.created_at, "updated_at": row.updated_at}
    )


async def _validate(body: TeamSpec, session: SessionDep, principal_id: str, services: ServicesDep) -> None:
    resolver = TeamResolver(SpecValidator(services.models, services.tools), AgentRepository(session), principal_id)
    await resolver.resolve(body, ["body"])


@router.post(
    "",
    name="create_team",
    status_code=status.HTTP_201_CREATED,
    summary="Create a team",
    responses=problem_responses(400, 409, 422),
)
async def create_team(body: TeamSpec, session: SessionDep, principal: PrincipalDep, services: ServicesDep) -> TeamRead:
    await _validate(body, session, principal.id, services)
    row = Team(id=new_id("team"), principal_id=principal.id, name=body.name, spec=body.model_dump(mode="json"))
    await TeamRepository(session).add(row)
    await session.commit()
    return to_read(row)


@router.post(
    "/import",
    name="import_team_component",
    status_code=status.HTTP_201_CREATED,
    summary="Import a team from AutoGen component JSON",
    description="Creates a team from an AutoGen declarative component (as AutoGen Studio galleries hold them). "
    "The JSON is read, never loaded: code (`FunctionTool` source, code executors) and classes off the allowlist "
    "are refused with a 422 whose `errors[].loc` points into the component. Keys in it are ignored. "
    "See docs/interop.md.",
    responses=problem_responses(400, 409, 422),
)
async def import_team_component(
    body: TeamImport, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> TeamRead:
    imported = ComponentImporter(services.settings).team(body.component.model_dump(mode="json"), body.name)
    resolver = TeamResolver(SpecValidator(services.models, services.tools), AgentRepository(session), principal.id)
    await imported.validate(resolver)
    spec = imported.spec
    row = Team(id=new_id("team"), principal_id=principal.id, name=spec.name, spec=spec.model_dump(mode="json"))
    await TeamRepository(session).add(row)
    await session.commit()
    return to_read(row)


@router.get("", name="list_teams", summary="List teams", responses=problem_responses(400))
async def list_teams(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ListPage[TeamRead]:
    page = await TeamRepository(session).list(principal.id, limit=limit, cursor=cursor)
    return ListPage(data=[to_read(r) for r in page.items], next_cursor=page.next_cursor)


@router.get("/{team_id}", name="get_team", summary="Get a team by id or name", responses=problem_responses(404))
async def get_team(team_id: str, session: SessionDep, principal: PrincipalDep) -> TeamRead:
    return to_read(await TeamRepository(session).get_by_id_or_name(principal.id, team_id))


@router.get(
    "/{team_id}/component",
    name="export_team_component",
    summary="Export a team as AutoGen component JSON",
    description="The team as an AutoGen declarative component, the format AutoGen Studio galleries use: what "
    "the server would build to run it, without any key; tools by name, `fake` models as a replay client. "
    "`POST /v1/teams/import` reads it back. 422 for a kind AutoGen has no component for, or a stored team that "
    "no longer validates. See docs/interop.md.",
    responses=problem_responses(404, 422),
)
async def export_team_component(
    team_id: str, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> TeamComponent:
    row = await TeamRepository(session).get_by_id_or_name(principal.id, team_id)
    resolver = TeamResolver(SpecValidator(services.models, services.tools), AgentRepository(session), principal.id)
    resolved = await resolver.resolve(TeamSpec.model_validate(row.spec), ["team"])
    return TeamComponent.model_validate(ComponentExporter(services.settings).team(resolved))


@router.put(
    "/{team_id}",
    name="replace_team",
    summary="Replace a team's spec",
    responses=problem_responses(404, 409, 422),
)
async def replace_team(
    team_id: str, body: TeamSpec, session: SessionDep, principal: PrincipalDep, services: ServicesDep
) -> TeamRead:
    repo = TeamRepository(session)
    row = await repo.get_by_id_or_name(principal.id, team_id)
    await _validate(body, session, principal.id, services)
    row.name = body.name
    row.spec = body.model_dump(mode="json")
    await repo.add(row)
    await session.commit()
    return to_read(row)


@router.delete(
    "/{team_id}",
    name="delete_team",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a team",
    responses=problem_responses(404),
)
async def delete_team(team_id: str, session: SessionDep, principal: PrincipalDep) -> Response:
    repo = TeamRepository(session)
    await repo.delete(await repo.get_by_id_or_name(principal.id, team_id))
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
