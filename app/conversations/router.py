"""`/v1/conversations`: durable threads and their messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import PrincipalDep, SessionDep
from app.conversations.models import Conversation, Message
from app.conversations.repository import ConversationRepository, MessageRepository
from app.conversations.schemas import ConversationRead, MessagePage, MessageRead
from app.core.errors import problem_responses
from app.core.schemas import ListPage
from app.runs.schemas import Usage

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

# the greatest position a request may name: positions are 32-bit integers in PostgreSQL
MAX_POSITION = 2**31 - 1


def to_read(row: Conversation) -> ConversationRead:
    return ConversationRead(
        id=row.id,
        title=row.title,
        team_id=row.team_id,
        message_count=row.message_count,
        has_state=row.state is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def message_read(m: Message) -> MessageRead:
    return MessageRead(
        id=m.id,
        conversation_id=m.conversation_id,
        run_id=m.run_id,
        position=m.position,
        seq=m.seq,
        agent=m.agent,
        type=m.type,
        text=m.content,
        usage=Usage(
            prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens,
            total_tokens=m.prompt_tokens + m.completion_tokens,
            estimated=m.usage_estimated,
        ),
        created_at=m.created_at,
    )


@router.get("", name="list_conversations", summary="List conversations", responses=problem_responses(400))
async def list_conversations(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ListPage[ConversationRead]:
    page = await ConversationRepository(session).list(principal.id, limit=limit, cursor=cursor)
    return ListPage(data=[to_read(c) for c in page.items], next_cursor=page.next_cursor)


@router.get(
    "/{conversation_id}",
    name="get_conversation",
    summary="Get a conversation",
    responses=problem_responses(404),
)
async def get_conversation(conversation_id: str, session: SessionDep, principal: PrincipalDep) -> ConversationRead:
    return to_read(await ConversationRepository(session).get(principal.id, conversation_id))


@router.get(
    "/{conversation_id}/messages",
    name="list_conversation_messages",
    summary="List a conversation's messages in order",
    responses=problem_responses(404),
)
async def list_messages(
    conversation_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    after: Annotated[int, Query(ge=0, le=MAX_POSITION, description="Return messages after this position.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    run_id: Annotated[str | None, Query(description="Only the messages of this run.")] = None,
) -> MessagePage:
    await ConversationRepository(session).get(principal.id, conversation_id)
    page = await MessageRepository(session).page(conversation_id, after=after, limit=limit, run_id=run_id)
    next_after = int(page.next_cursor) if page.next_cursor else None
    return MessagePage(data=[message_read(m) for m in page.items], next_after=next_after)
