"""`/v1/tools`: every tool an agent spec may name, with what a client needs to use it well."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import PrincipalDep, ServicesDep

router = APIRouter(prefix="/v1/tools", tags=["tools"])


class ToolRead(BaseModel):
    name: str = Field(description="What an agent's `tools` names it by.", examples=["calculator"])
    description: str = Field(description="What the model is told the tool does.")
    source: Literal["builtin", "entry_point", "code"] = Field(
        description="`builtin`: the server's own; `entry_point`: registered by the operator (`SWARM_TOOLS`); "
        "`code`: registered by the program that embeds the server."
    )
    parameters: dict[str, Any] = Field(
        description="The JSON schema of the tool's arguments, as the model gets it.",
        json_schema_extra={"additionalProperties": True},
    )
    requires_approval: bool = Field(
        description="Every call waits for a person's decision (the operator's `SWARM_TOOLS_REQUIRE_APPROVAL`); "
        "an agent may ask it for other tools too (`approve_tools`)."
    )
    idempotent: bool = Field(
        description="A call cut by a crash may run again on resume; a call of any other tool is not repeated."
    )


class ToolList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ToolRead]


@router.get("", name="list_tools", summary="List the tools agents may name")
async def list_tools(_principal: PrincipalDep, services: ServicesDep) -> ToolList:
    """Every tool registered on this server, by name: built-in, the operator's entry points, and any
    registered in code, each with the JSON schema of its arguments and whether its calls need a
    person's approval."""
    return ToolList(
        data=[
            ToolRead(
                name=t.name,
                description=t.description,
                source=t.source,  # type: ignore[arg-type]
                parameters=t.parameters,
                requires_approval=t.requires_approval,
                idempotent=t.idempotent,
            )
            for t in services.tools.describe()
        ]
    )
