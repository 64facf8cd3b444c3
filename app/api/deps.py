"""FastAPI dependencies, as ``Annotated`` aliases routers use directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Scope

from app.api.services import Services, services_in
from app.auth.service import Principal, bearer_token
from app.core.settings import Settings
from app.engine.providers import ModelRegistry
from app.runtime.manager import RunManager


async def get_services(request: Request) -> Services:
    return services_in(request.scope)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_session(request: Request, services: ServicesDep) -> AsyncIterator[AsyncSession]:
    maker = services.read_sessionmaker if request.method in ("GET", "HEAD") else services.sessionmaker
    async with maker() as session:
        yield session


async def get_run_manager(services: ServicesDep) -> RunManager:
    return services.runs


async def get_models(services: ServicesDep) -> ModelRegistry:
    return services.models


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
RunManagerDep = Annotated[RunManager, Depends(get_run_manager)]
ModelsDep = Annotated[ModelRegistry, Depends(get_models)]


async def authenticate(scope: Scope, token: str | None, *, malformed: bool) -> Principal:
    """The caller of a request by the app's ``Authenticator``: what the ``ApiAuth`` middleware runs."""
    services = services_in(scope)
    return await services.auth.principal(services.settings, services.read_sessionmaker, token, malformed=malformed)


_bearer = HTTPBearer(auto_error=False, description="An API key created with `swarmdirector keys create`.")


async def get_principal(
    request: Request,
    # declares the scheme in OpenAPI; the header itself is read below
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, as the ``ApiAuth`` middleware found it; found here where that does not run."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    authorization = request.headers.get("authorization")
    token = bearer_token(authorization)
    return await authenticate(request.scope, token, malformed=authorization is not None and token is None)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
