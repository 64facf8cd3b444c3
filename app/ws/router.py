"""`WS /v1/ws`: one socket, many runs (see docs/websocket.md).

The socket is checked before it is accepted: its ``Origin`` by ``OriginCheck``
(a page of another site is refused), its key by the ``ApiAuth`` middleware (a
Bearer header, or an ``access_token`` query parameter for browsers); a refused
socket never reaches this route.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from app.api.services import Services
from app.auth.middleware import take_query_token
from app.auth.service import Principal, Unauthorized, bearer_token
from app.ws.connection import WsConnection

router = APIRouter()


async def _principal(websocket: WebSocket, services: Services) -> Principal | None:
    """The caller as the middleware found it; found here where the middleware does not run."""
    found = getattr(websocket.state, "principal", None)
    if isinstance(found, Principal):
        return found
    token = bearer_token(websocket.headers.get("authorization")) or take_query_token(websocket.scope)
    try:
        return await services.auth.principal(services.settings, services.read_sessionmaker, token)
    except Unauthorized:
        return None


@router.websocket("/v1/ws", name="run_socket")
async def run_socket(websocket: WebSocket) -> None:
    services: Services = websocket.app.state.services
    principal = await _principal(websocket, services)
    if principal is None:
        await websocket.close(code=4401, reason="invalid API key")
        return
    await WsConnection(websocket, services, principal).serve()
