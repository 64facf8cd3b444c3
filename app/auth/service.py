"""Who is calling: a principal from an API key, or the local principal while the server is open.

The rules (docs/security.md says them for operators):

- A request that carries a key is that key's principal. An unknown or revoked key is a 401,
  whatever the mode: a client that sends a key wants it checked.
- A request without a key is the ``local`` principal only while the server is *open*: it listens
  on loopback only, ``SWARM_AUTH_REQUIRED`` is off, the environment is not ``production``, and no
  key was ever created in its database. Otherwise it is a 401.
- Once a key exists the server is closed for good (revoking every key does not reopen it), and
  a running server notices a key created by the CLI at the next request.

Keys are 256 random bits, so one SHA-256 is enough to store them: there is nothing to guess, and a
slow password hash would only put a CPU cost on every request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import ApiKey
from app.auth.repository import ApiKeyRepository
from app.core.coalesce import Coalesced
from app.core.errors import AppError
from app.core.ids import new_id
from app.core.settings import Settings

log = structlog.get_logger(__name__)

LOCAL_PRINCIPAL = "local"
KEY_PREFIX = "sd_"
SHOWN_PREFIX_CHARS = 11  # "sd_" and 8 random characters: enough to tell keys apart in `keys list`
MAX_KEY_CHARS = 200


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    via: str  # "api_key" | "open"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, principal_id: str) -> tuple[ApiKey, str]:
    """A new key row and its secret; the secret exists only in the caller's hands from here on."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        principal_id=principal_id,
        name=name,
        prefix=secret[:SHOWN_PREFIX_CHARS],
        key_hash=hash_key(secret),
    )
    return row, secret


async def principal_for_key(session: AsyncSession, secret: str) -> Principal | None:
    if not secret or len(secret) > MAX_KEY_CHARS:
        return None
    row = await ApiKeyRepository(session).active_by_hash(hash_key(secret))
    return Principal(row.principal_id, "api_key") if row else None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def why_auth_required(settings: Settings) -> str | None:
    """Why this server must check keys whether or not one exists; None when it may be open."""
    if settings.auth_required:
        return "SWARM_AUTH_REQUIRED is set"
    if settings.environment == "production":
        return "the environment is production"
    if not is_loopback(settings.host):
        return f"the server listens on {settings.host}, beyond loopback"
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


Sessions = async_sessionmaker[AsyncSession]


class Authenticator:
    """Turns a request's token (or its absence) into a principal, per the rules above.

    Requests that arrive together share their reads (``app/core/coalesce.py``): one "does any key
    exist?" for all of them, one lookup per key, each read after every request it answers arrived.
    """

    def __init__(self) -> None:
        # latched: once a key has been seen the server never goes back to open
        self._closed = False
        self._keys_exist: Coalesced[Sessions, bool] = Coalesced(self._any_key)
        self._principals: Coalesced[tuple[Sessions, str], Principal | None] = Coalesced(self._key_principal)

    @staticmethod
    async def _any_key(sessionmaker: Sessions) -> bool:
        async with sessionmaker() as session:
            return await ApiKeyRepository(session).any_exists()

    @staticmethod
    async def _key_principal(key: tuple[Sessions, str]) -> Principal | None:
        sessionmaker, secret = key
        async with sessionmaker() as session:
            return await principal_for_key(session, secret)

    async def is_open(self, settings: Settings, sessionmaker: Sessions) -> bool:
        if self._closed or why_auth_required(settings) is not None:
            return False
        if await self._keys_exist(sessionmaker):
            self._closed = True
        return not self._closed

    async def principal(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        token: str | None,
        *,
        malformed: bool = False,
    ) -> Principal:
        """The caller; raises ``Unauthorized``. ``malformed``: credentials were sent but unreadable."""
        if token is not None:
            principal = await self._principals((sessionmaker, token))
            if principal is None:
                raise Unauthorized("The API key is not valid: it is unknown or has been revoked.")
            self._closed = True
            return principal
        if malformed:
            raise Unauthorized("Send the API key as `Authorization: Bearer <key>`.")
        if await self.is_open(settings, sessionmaker):
            return Principal(LOCAL_PRINCIPAL, "open")
        raise Unauthorized(
            "An API key is required: send `Authorization: Bearer <key>` "
            "(an operator creates keys with `swarmdirector keys create`)."
        )


async def announce_auth_mode(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], auth: Authenticator
) -> bool:
    """Say at start whether the API is open; True when it is."""
    if await auth.is_open(settings, sessionmaker):
        log.warning(
            "auth_open",
            notice=(
                "No API key exists and the server listens on loopback only, so requests without a key are "
                "accepted as the local principal. Create a key with `swarmdirector keys create` to require keys."
            ),
        )
        return True
    reason = why_auth_required(settings) or "an API key exists"
    log.info("auth_required", reason=reason)
    return False
