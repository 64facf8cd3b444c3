"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.core.deps import ServicesDep

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = {}


@router.get("/healthz", name="healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    name="readyz",
    summary="The database and the event bus are reachable",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready."}},
)
async def readyz(services: ServicesDep) -> Health | JSONResponse:
    checks = {"database": False, "bus": True}
    try:
        async with services.read_sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = True
    except Exception:
        checks["database"] = False
    ok = all(checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    if not ok:
        return JSONResponse(body.model_dump(), status_code=503)
    return body
