"""`WS /v1/ws`: one socket, many runs (see docs/websocket.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from app.auth.service import LOCAL_PRINCIPAL, Principal, principal_for_key
from app.core.services import Services
from app.ws.connection import WsConnection

router = APIRouter()


async def _principal(websocket: WebSocket, services: Services) -> Principal | None:
    """The caller, authenticated before the socket is accepted (Bearer header or `access_token` query)."""
    header = websocket.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else websocket.query_params.get("access_token")
    if not token:
        return Principal(LOCAL_PRINCIPAL, "open")
    async with services.read_sessionmaker() as session:
        return await principal_for_key(session, token)


@router.websocket("/v1/ws", name="run_socket")
async def run_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    principal = await _principal(websocket, services)
    if principal is None:
        await websocket.close(code=4401, reason="invalid API key")
        return
    await WsConnection(websocket, services, principal).serve()
