"""Liveness and readiness probes.

``/readyz`` is false while the database does not answer (within
``SWARM_READYZ_TIMEOUT_S``) or while the event recorder cannot write, so a
load balancer stops sending runs to a server that could not store them; in
the distributed mode, also while Redis (the event bus) does not answer, and
while this process's signal listener is not subscribed (``signals``: it is
reconnecting after Redis was lost, and cancels and input answers would not
reach this process's runs).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app.api.deps import ServicesDep
from app.runtime.launcher import DistributedLauncher

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
    # "database" means it answers a read now and the recorder's last write went through
    checks = {"database": False, "bus": False}
    try:
        async with asyncio.timeout(services.settings.readyz_timeout_s), services.read_sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = services.recorder.healthy
    except Exception:
        checks["database"] = False
    try:
        async with asyncio.timeout(services.settings.readyz_timeout_s):
            checks["bus"] = await services.launcher.bus_ready()
    except TimeoutError:
        checks["bus"] = False
    if isinstance(services.launcher, DistributedLauncher):
        checks["signals"] = services.launcher.cluster.signals.listening
    ok = all(checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    if not ok:
        return JSONResponse(body.model_dump(), status_code=503)
    return body
