"""The recorder runs a batch's executions of one prepared statement as one ``executemany``: the
changes of many runs cost one statement each, every row lands, and one row's changes keep their order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.conversations.models import Conversation, Message
from app.conversations.repository import message_stored
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.core.envelope import Envelope
from app.core.migrate import upgrade_head
from app.core.repository import new_row
from app.runs.models import Run, RunEvent
from app.runs.repository import event_insert, run_started
from app.runtime.bus import EventBus
from app.runtime.recorder import EventRecorder, Rows, StorageError, Superseded


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await upgrade_head(eng)
    yield eng
    await eng.dispose()


async def seed(maker: async_sessionmaker[AsyncSession], runs: int) -> None:
    async with maker() as session:
        session.add(Conversation(id="conv", principal_id="p", title="t"))
        await session.flush()
        for n in range(runs):
            session.add(
                Run(
                    id=f"run{n}",
                    principal_id="p",
                    conversation_id="conv",
                    team_name="t",
                    team_spec={},
                    task="t",
                    status="queued",
                    timeout_s=60,
                    created_at=utcnow(),
                )
            )
        await session.commit()


@contextlib.asynccontextmanager
async def recording(engine: AsyncEngine, runs: int) -> AsyncIterator[EventRecorder]:
    """A recorder writing to ``engine``, whose database has ``runs`` queued runs of one conversation;
    stopped (everything queued written) on the way out."""
    await seed(create_sessionmaker(engine), runs)
    recorder = EventRecorder(engine, EventBus(16))
    recorder.start()
    try:
        yield recorder
    finally:
        await recorder.stop()


def message(run: int, seq: int) -> dict[str, Any]:
    return {
        "id": f"msg{run}-{seq}",
        "conversation_id": "conv",
        "run_id": f"run{run}",
        "principal_id": "p",
        "position": run * 10 + seq,
        "seq": seq,
        "agent": "a",
        "type": "text",
        "content": "hello",
        "payload": None,
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "created_at": utcnow(),
    }


def start_with_message(recorder: EventRecorder, runs: int, at: datetime) -> Awaitable[list[Any]]:
    """Each run's ``run.started`` with its update and a message, all queued at once (one batch);
    what each ``commit`` returned or raised, in run order."""
    return asyncio.gather(
        *(
            recorder.commit(
                Envelope(f"run{n}", 2, "run.started", at, {}),
                Rows((run_started(f"run{n}", at, 1), *message_stored(message(n, 2)))),
            )
            for n in range(runs)
        ),
        return_exceptions=True,
    )


async def test_a_burst_of_runs_changes_costs_one_statement_per_kind(engine: AsyncEngine) -> None:
    maker = create_sessionmaker(engine)
    executed: list[tuple[str, bool]] = []

    def count(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, executemany: bool) -> None:
        if statement.startswith(("UPDATE", "INSERT INTO messages")):
            words = statement.split()  # UPDATE <table> ... | INSERT INTO <table> ...
            executed.append((f"{words[0]} {words[1] if words[0] == 'UPDATE' else words[2]}", executemany))

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with recording(engine, 40) as recorder:
            executed.clear()  # the seed's statements
            assert await start_with_message(recorder, 40, utcnow()) == [None] * 40
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert sorted(executed) == [("INSERT messages", True), ("UPDATE conversations", True), ("UPDATE runs", True)]
    async with maker() as session:
        statuses = set((await session.scalars(select(Run.status))).all())
        attempts = set((await session.scalars(select(Run.attempts))).all())
        messages = await session.scalar(select(func.count()).select_from(Message))
        conversation = await session.get(Conversation, "conv")
    assert statuses == {"running"} and attempts == {1}
    assert messages == 40
    assert conversation is not None and conversation.message_count == 40


async def test_one_row_s_changes_in_a_batch_keep_their_order(engine: AsyncEngine) -> None:
    async with recording(engine, 1) as recorder:
        at = utcnow()
        await asyncio.gather(
            *(
                recorder.commit(Envelope("run0", seq, "run.started", at, {}), Rows((run_started("run0", at, seq),)))
                for seq in range(2, 12)
            )
        )
    async with create_sessionmaker(engine)() as session:
        run = await session.get(Run, "run0")
    assert run is not None and run.attempts == 11  # the last one queued is the last one applied


async def test_a_batch_is_one_trip_to_the_database_thread(engine: AsyncEngine, trips: Counter[str]) -> None:
    async with recording(engine, 3) as recorder:
        trips.clear()
        # the events, the runs' updates and their messages, with BEGIN IMMEDIATE and COMMIT
        assert await start_with_message(recorder, 3, utcnow()) == [None] * 3
        assert trips == Counter({"_steps": 1})
    async with create_sessionmaker(engine)() as session:
        stored = (await session.scalars(select(Message.id).order_by(Message.id))).all()
        statuses = set((await session.scalars(select(Run.status))).all())
    assert stored == ["msg0-2", "msg1-2", "msg2-2"] and statuses == {"running"}


async def test_a_row_that_conflicts_fails_alone_and_the_writer_goes_on(engine: AsyncEngine) -> None:
    async with recording(engine, 3) as recorder:
        at = utcnow()
        await recorder.commit(Envelope("run1", 2, "run.started", at, {}))
        # one batch: run1's seq 2 is taken, so its item fails at the commit; the others are stored
        results = await start_with_message(recorder, 3, at)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], Superseded)
        # and the writer is whole: the next batch lands
        await recorder.commit(Envelope("run1", 3, "run.started", at, {}), Rows((run_started("run1", at, 2),)))
    async with create_sessionmaker(engine)() as session:
        stored = (await session.scalars(select(Message.id).order_by(Message.id))).all()
        attempts = dict((await session.execute(select(Run.id, Run.attempts))).all())
    assert stored == ["msg0-2", "msg2-2"]  # run1's message went with its failed event: not stored
    assert attempts == {"run0": 1, "run1": 2, "run2": 1}


def new_run_rows(n: int, at: datetime) -> Rows:
    """A run started in a new conversation, as ``RunService.create`` hands it to the recorder."""
    conversation = Conversation.started(id=f"c{n}", principal_id="p", title="t", team_id=None, at=at)
    run = Run.queued(
        id=f"new{n}",
        principal_id="p",
        conversation_id=f"c{n}",
        team_id=None,
        team_name="t",
        team_spec={},
        task="t",
        if_busy="reject",
        timeout_s=60,
        input_timeout_s=60,
        meta={},
        max_attempts=1,
        at=at,
    )
    queued = Envelope(f"new{n}", 1, "run.queued", at, {"conversation_id": f"c{n}"})
    return Rows((new_row(conversation), new_row(run), event_insert(queued)))


async def test_new_runs_started_together_are_one_insert_per_table_parents_first(engine: AsyncEngine) -> None:
    inserts: list[tuple[str, bool]] = []

    def count(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, executemany: bool) -> None:
        if statement.startswith("INSERT"):
            inserts.append((statement.split()[2], executemany))

    async with recording(engine, 2) as recorder:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            at = utcnow()
            # queued at once with other runs' events (one batch): the foreign keys hold only if every
            # conversation is inserted before its run and every run before its event
            results = await asyncio.gather(
                recorder.commit(Envelope("run0", 2, "run.started", at, {}), Rows((run_started("run0", at, 1),))),
                *(recorder.commit(None, new_run_rows(n, at)) for n in range(30)),
                recorder.commit(Envelope("run1", 2, "run.started", at, {}), Rows((run_started("run1", at, 1),))),
            )
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert results == [None] * 32
    assert inserts == [("run_events", True), ("conversations", True), ("runs", True), ("run_events", True)]
    async with create_sessionmaker(engine)() as session:
        new = (await session.scalars(select(Run.id).where(Run.id.like("new%")))).all()
        queued = await session.scalar(select(func.count()).select_from(RunEvent).where(RunEvent.type == "run.queued"))
    assert len(new) == 30 and queued == 30


async def test_an_event_and_the_next_go_in_one_transaction_even_with_new_runs(
    engine: AsyncEngine, trips: Counter[str]
) -> None:
    """A run's ``run.started`` and its task's message (``then``) queued with new runs' rows: their event
    rows go before any ``Rows``, so no foreign key splits the batch into one transaction per item."""
    async with recording(engine, 2) as recorder:
        at = utcnow()
        bus = recorder._bus
        for n in range(2):
            bus.open(f"run{n}", 1)  # live here: the bus learns what is stored
        trips.clear()
        results = await asyncio.gather(
            *(
                recorder.commit(
                    Envelope(f"run{n}", 2, "run.started", at, {}),
                    Rows((run_started(f"run{n}", at, 1), *message_stored(message(n, 3)))),
                    then=Envelope(f"run{n}", 3, "message.completed", at, {}),
                )
                for n in range(2)
            ),
            *(recorder.commit(None, new_run_rows(n, at)) for n in range(5)),
        )
        assert results == [None] * 7
        assert trips == Counter({"_steps": 1})  # one transaction, BEGIN to COMMIT
        assert [bus.flushed_seq(f"run{n}") for n in range(2)] == [3, 3]
    async with create_sessionmaker(engine)() as session:
        events = (await session.execute(select(RunEvent.run_id, RunEvent.seq, RunEvent.type))).all()
        stored = (await session.scalars(select(Message.id).order_by(Message.id))).all()
    assert sorted(e for e in events if e.run_id.startswith("run")) == [
        ("run0", 2, "run.started"),
        ("run0", 3, "message.completed"),
        ("run1", 2, "run.started"),
        ("run1", 3, "message.completed"),
    ]
    assert len([e for e in events if e.run_id.startswith("new")]) == 5
    assert stored == ["msg0-3", "msg1-3"]


async def test_a_commit_after_the_recorder_stopped_fails_at_once(engine: AsyncEngine) -> None:
    async with recording(engine, 1) as recorder:
        pass
    with pytest.raises(StorageError, match="stopped"):
        await asyncio.wait_for(recorder.commit(None, new_run_rows(0, utcnow())), timeout=5)
