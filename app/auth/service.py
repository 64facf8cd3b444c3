"""Who is calling: a principal from an API key, or the local principal in open mode."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey

LOCAL_PRINCIPAL = "local"


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    via: str  # "api_key" | "open"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def principal_for_key(session: AsyncSession, secret: str) -> Principal | None:
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None)))
    return Principal(row.principal_id, "api_key") if row else None
