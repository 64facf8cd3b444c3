from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.conversations.models import Conversation, Message
from app.core.repository import Execution, Page, Repository, table
from app.core.sqlite_driver import DEFER_WRITE

_conversations = table(Conversation)
_MESSAGE = insert(table(Message))
_ONE_MORE_MESSAGE = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("b_conversation_id"))
    .values(message_count=_conversations.c.message_count + 1)
)


_c = _conversations.c
_RUN_ENDED = (
    update(_conversations)
    .where(_c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        state_signature=bindparam("b_signature"),
        updated_at=bindparam("b_at"),
        active_run_id=case((_c.active_run_id == bindparam("b_run_id"), None), else_=_c.active_run_id),
    )
)


def message_stored(values: dict[str, Any]) -> tuple[Execution, ...]:
    """A message and its conversation's count: executions for the recorder (one executemany per batch)."""
    return (_MESSAGE, values), (_ONE_MORE_MESSAGE, {"b_conversation_id": values["conversation_id"]})


def end_run(
    conn: Connection, id_: str, run_id: str, *, state: dict[str, Any] | None, signature: str | None, at: datetime
) -> None:
    """A run of the conversation ended: keep its team state (or none), and free the turn it held.

    In the recorder's transaction (``Apply``); on SQLite the update goes with its commit (``DEFER_WRITE``)."""
    conn.execute(
        _RUN_ENDED,
        {"b_id": id_, "b_run_id": run_id, "b_state": state, "b_signature": signature, "b_at": at},
        execution_options=DEFER_WRITE,
    )


class ConversationRepository(Repository[Conversation]):
    model = Conversation
    label = "conversation"

    async def for_update(self, id_: str) -> Conversation | None:
        return await self.session.get(Conversation, id_)


class MessageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def history(self, conversation_id: str) -> list[Message]:
        rows = await self.session.scalars(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position)
        )
        return list(rows)

    async def of_run(self, run_id: str) -> list[Message]:
        """The messages a run stored, in order."""
        rows = await self.session.scalars(select(Message).where(Message.run_id == run_id).order_by(Message.position))
        return list(rows)

    async def search(self, conversation_id: str, query: str, limit: int) -> list[Message]:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.content.ilike(f"%{escaped}%", escape="\\"))
            .order_by(Message.position.desc())
            .limit(limit)
        )
        return list(rows)

    async def page(self, conversation_id: str, *, after: int, limit: int, run_id: str | None = None) -> Page[Message]:
        stmt = select(Message).where(Message.conversation_id == conversation_id, Message.position > after)
        if run_id is not None:
            stmt = stmt.where(Message.run_id == run_id)
        rows = list(await self.session.scalars(stmt.order_by(Message.position).limit(limit + 1)))
        has_more = len(rows) > limit
        items = rows[:limit]
        return Page(items, str(items[-1].position) if has_more and items else None)


class MessageSearch:
    """The history search a run's tools are given (``app.engine.tools.HistorySearch``).

    Each search reads in a short session of its own, on the read pool: a tool call must not hold a
    session for the length of a run.
    """

    __slots__ = ("_sessions",)

    def __init__(self, read_sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = read_sessionmaker

    async def __call__(self, conversation_id: str, query: str, limit: int) -> list[Message]:
        async with self._sessions() as session:
            return await MessageRepository(session).search(conversation_id, query, limit)
