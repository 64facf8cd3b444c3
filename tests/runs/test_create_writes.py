"""A new run's rows (its conversation, the run and its ``run.queued``) go to SQLite with the commit of
``RunService.create``, in one trip to the connection's thread (``DEFER_WRITE``)."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.auth.service import LOCAL_PRINCIPAL, Principal
from app.runs.models import Run, RunEvent
from app.runs.schemas import RunCreate
from app.runs.service import RunService
from tests.conftest import services_of
from tests.fixtures.specs import run_body, team

pytestmark = pytest.mark.embedded_only


async def test_a_new_run_s_rows_are_one_trip(app: FastAPI, trips: Counter[str]) -> None:
    services = services_of(app)
    body = RunCreate.model_validate(run_body(team=team(max_messages=2)))
    async with services.database.sessionmaker()() as session:
        trips.clear()
        run = await RunService(session, Principal(LOCAL_PRINCIPAL, "open"), services).create(body)
        assert trips == Counter({"_steps": 1})  # BEGIN IMMEDIATE, three inserts, COMMIT
    async with services.database.read_sessionmaker()() as session:
        assert await session.scalar(select(Run.conversation_id).where(Run.id == run.id)) == run.conversation_id
        assert await session.scalar(select(RunEvent.type).where(RunEvent.run_id == run.id)) == "run.queued"
