"""A new run's rows (its conversation, the run and its ``run.queued``) go to SQLite with the commit,
in one trip to the connection's thread; a conflict among them fails the commit and stores none."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.conversations.models import Conversation
from app.conversations.repository import ConversationRepository
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.migrate import upgrade_head
from app.runs.models import Run, RunEvent
from app.runs.repository import RunEventRepository, RunRepository
from app.runtime.envelope import Envelope


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await upgrade_head(eng)
    yield eng
    await eng.dispose()


def rows(n: int) -> tuple[Conversation, Run, Envelope]:
    now = utcnow()
    conversation = Conversation(
        id=f"conv{n}",
        principal_id="p",
        title="t",
        team_id=None,
        state=None,
        state_signature=None,
        message_count=0,
        active_run_id=None,
        created_at=now,
        updated_at=now,
    )
    run = Run(
        id=f"run{n}",
        principal_id="p",
        conversation_id=conversation.id,
        team_id=None,
        team_name="t",
        team_spec={},
        task="t",
        status="queued",
        if_busy="enqueue",
        timeout_s=60,
        input_timeout_s=60,
        meta={},
        stop_reason=None,
        error_code=None,
        error_message=None,
        prompt_tokens=0,
        completion_tokens=0,
        message_count=0,
        last_seq=0,
        result=None,
        worker_id=None,
        lease_expires_at=None,
        attempts=0,
        max_attempts=1,
        cancel_requested=None,
        created_at=now,
        started_at=None,
        finished_at=None,
    )
    return conversation, run, Envelope(run.id, 1, "run.queued", now, {"task": "t"})


async def create(engine: AsyncEngine, n: int) -> None:
    conversation, run, queued = rows(n)
    async with create_sessionmaker(engine)() as session:
        await ConversationRepository(session).insert(conversation)
        await RunRepository(session).insert(run)
        await RunEventRepository(session).insert(queued)
        await session.commit()


async def test_a_new_run_s_rows_are_one_trip(engine: AsyncEngine, trips: Counter[str]) -> None:
    trips.clear()
    await create(engine, 1)
    assert trips == Counter({"_steps": 1})  # BEGIN IMMEDIATE, three inserts, COMMIT
    async with create_sessionmaker(engine)() as session:
        assert await session.scalar(select(Run.conversation_id).where(Run.id == "run1")) == "conv1"
        assert await session.scalar(select(RunEvent.type).where(RunEvent.run_id == "run1")) == "run.queued"


async def test_a_conflict_fails_the_commit_and_stores_none_of_the_rows(engine: AsyncEngine) -> None:
    await create(engine, 1)
    conversation, run, _queued = rows(2)
    run.id = "run1"  # taken
    async with create_sessionmaker(engine)() as session:
        await ConversationRepository(session).insert(conversation)
        await RunRepository(session).insert(run)
        with pytest.raises(IntegrityError):
            await session.commit()
    async with create_sessionmaker(engine)() as session:
        assert await session.scalar(select(func.count()).select_from(Conversation)) == 1
        assert await session.scalar(select(func.count()).select_from(Run)) == 1
