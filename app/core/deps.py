"""FastAPI dependencies, as ``Annotated`` aliases routers use directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import LOCAL_PRINCIPAL, Principal, principal_for_key
from app.core.errors import AppError
from app.core.services import Services
from app.core.settings import Settings
from app.engine.providers import ModelRegistry
from app.runtime.manager import RunManager


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_session(request: Request, services: ServicesDep) -> AsyncIterator[AsyncSession]:
    maker = services.read_sessionmaker if request.method in ("GET", "HEAD") else services.sessionmaker
    async with maker() as session:
        yield session


def get_run_manager(services: ServicesDep) -> RunManager:
    return services.runs


def get_models(services: ServicesDep) -> ModelRegistry:
    return services.models


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
RunManagerDep = Annotated[RunManager, Depends(get_run_manager)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]

_bearer = HTTPBearer(auto_error=False, description="An API key created with `swarmdirector keys create`.")


async def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        return Principal(LOCAL_PRINCIPAL, "open")
    principal = await principal_for_key(session, credentials.credentials)
    if principal is None:
        raise Unauthorized("The API key is not valid.", headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
