"""API keys in the database: the only SQL that touches them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.core.db import utcnow
from app.core.sqlite_driver import SINGLE_READ


class ApiKeyRepository:
    """Keys are not owned rows (they define the owners), so this is not a ``Repository[ApiKey]``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # the two reads of every request's key check: each is its session's only statement, so on a SQLite
    # reader it is one trip to the connection's thread, not two (app/core/sqlite_driver.py)

    async def active_by_hash(self, key_hash: str) -> ApiKey | None:
        statement = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        return await self.session.scalar(statement.execution_options(**SINGLE_READ))

    async def any_exists(self) -> bool:
        """Whether a key was ever created here (revoked ones count: revoking never reopens a server)."""
        return await self.session.scalar(select(ApiKey.id).limit(1).execution_options(**SINGLE_READ)) is not None

    async def all(self) -> list[ApiKey]:
        return list(await self.session.scalars(select(ApiKey).order_by(ApiKey.id)))

    async def get(self, key_id: str) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def revoke(self, key: ApiKey) -> bool:
        """Revoke ``key``; False when it already was."""
        if key.revoked_at is not None:
            return False
        key.revoked_at = utcnow()
        await self.session.flush()
        return True
