"""One WebSocket connection: many runs over one socket.

The connection owns every task it starts (a sender, and one follower per
subscribed run) and cancels them when the socket goes; the runs themselves
are untouched. Outgoing frames pass through one bounded queue: a slow client
blocks its followers, whose bus subscriptions then lag and re-attach from
storage, so a slow socket never slows a run. A frame the server cannot use
gets an ``error`` frame; the socket stays open for everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import structlog
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from app.api.services import Services
from app.auth.service import Principal
from app.core.envelope import Envelope
from app.core.errors import AppError
from app.patches.uvicorn_servers import abort_connection
from app.runs.limits import TooManyRequests
from app.runs.models import Run
from app.runs.repository import RunRepository
from app.runs.router import nothing_after, to_read
from app.runs.schemas import IdempotencyKey, InputCreate, RunCreate
from app.runs.service import RunService
from app.runs.sse import MAX_SEQ
from app.runtime.streams import StreamClosing, StreamLagged, follow

log = structlog.get_logger(__name__)

OUTBOX = 1024
_FOLLOW = "_follow"  # a handler's request to follow a run once its ack is out
CLIENT_TYPES = ("run.start", "subscribe", "unsubscribe", "input", "cancel", "ping")
_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


class FrameError(Exception):
    def __init__(self, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.errors = errors


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class WsConnection:
    def __init__(self, websocket: WebSocket, services: Services, principal: Principal) -> None:
        self.ws = websocket
        self.services = services
        self.settings = services.settings
        self.principal = principal
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOX)
        self.followers: dict[str, asyncio.Task[None]] = {}
        self._socket_task = asyncio.current_task()  # the socket's own: a stalled client's is aborted

    async def serve(self) -> None:
        await self.ws.accept()
        sender = asyncio.create_task(self._send_loop(), name="ws-sender")
        try:
            await self._receive_loop()
        finally:
            for task in self.followers.values():
                task.cancel()
            sender.cancel()
            for task in [*self.followers.values(), sender]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- in and out ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        timeout = self.settings.sse_send_timeout_s
        try:
            while True:
                frame = await self.outbox.get()
                async with asyncio.timeout(timeout):
                    await self.ws.send_text(frame)
        except TimeoutError:
            # a client that stopped reading: its connection is dropped with what is queued for it (a
            # close frame would wait behind that for ever); its runs go on
            closed = self._socket_task is not None and abort_connection(self._socket_task)
            log.warning("ws_client_stalled", send_timeout_s=timeout, closed=closed)
            if not closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(timeout):
                        await self.ws.close(code=1011)
        except (WebSocketDisconnect, RuntimeError):
            # a client that left: close; its runs go on
            with contextlib.suppress(Exception):
                await self.ws.close(code=1011)

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", errors="replace")
            await self._handle(text or "")

    async def _put(self, frame: dict[str, Any]) -> None:
        await self.outbox.put(_dumps(frame))

    # -- frames ----------------------------------------------------------------------------------

    async def _handle(self, text: str) -> None:
        frame_id: Any = None
        kind: str | None = None
        try:
            if len(text.encode()) > self.settings.ws_max_frame_bytes:
                raise FrameError("frame_too_large", f"Frames are limited to {self.settings.ws_max_frame_bytes} bytes.")
            try:
                frame = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise FrameError("invalid_frame", "The frame is not valid JSON.") from exc
            if not isinstance(frame, dict):
                raise FrameError("invalid_frame", "A frame is a JSON object.")
            frame_id = frame.get("id")
            if frame_id is not None and (not isinstance(frame_id, str) or len(frame_id) > 64):
                frame_id = None
                raise FrameError("invalid_frame", "`id` is a string of at most 64 characters.")
            kind = frame.get("type")
            if kind not in CLIENT_TYPES:
                raise FrameError("invalid_frame", f"Unknown frame type {kind!r}; known: {', '.join(CLIENT_TYPES)}.")
            reply = await getattr(self, "_on_" + kind.replace(".", "_"))(frame)
            follow_from: tuple[str, int] | None = reply.pop(_FOLLOW, None)
            if kind == "ping":
                await self._put({"type": "pong", "id": frame_id})
            else:
                await self._put({"type": "ack", "id": frame_id, "for": kind, **reply})
            if follow_from is not None:
                # after the ack, so a client learns the run before its first event
                self._follow(*follow_from)
        except FrameError as exc:
            await self._error(frame_id, kind, exc.code, exc.message, exc.errors)
        except ValidationError as exc:
            errors: list[dict[str, Any]] | None = [
                {"loc": ["body", *[p for p in e["loc"]]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            await self._error(frame_id, kind, "invalid_request", "The frame's fields are not valid.", errors)
        except AppError as exc:
            found = [e.model_dump() for e in exc.errors] if exc.errors else None
            extra: dict[str, Any] = {}
            if isinstance(exc, TooManyRequests):
                extra["retry_after_s"] = exc.retry_after_s  # what HTTP says in `Retry-After`
            await self._error(frame_id, kind, exc.code, exc.detail or exc.title, found, **extra)
        except Exception as exc:
            log.error("ws_frame_failed", kind=kind, exc_info=exc)
            await self._error(frame_id, kind, "internal_error", "An unexpected error occurred; it has been logged.")

    async def _error(
        self,
        frame_id: Any,
        kind: str | None,
        code: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "id": frame_id, "for": kind, "code": code, "message": message}
        if errors:
            frame["errors"] = errors
        frame.update(extra)
        await self._put(frame)

    @staticmethod
    def _fields(frame: dict[str, Any], *drop: str) -> dict[str, Any]:
        return {k: v for k, v in frame.items() if k not in ("type", "id", *drop)}

    async def _on_ping(self, frame: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _on_run_start(self, frame: dict[str, Any]) -> dict[str, Any]:
        subscribe = frame.get("subscribe", True)
        if not isinstance(subscribe, bool):
            raise FrameError("invalid_request", "`subscribe` is true or false.")
        if subscribe:
            self._check_room(None)
        key = frame.get("idempotency_key")
        if key is not None:
            try:
                key = _IDEMPOTENCY_KEY.validate_python(key)
            except ValidationError as exc:
                raise FrameError(
                    "invalid_request", "`idempotency_key` is a string of 1 to 255 printable ASCII characters."
                ) from exc
        body = RunCreate.model_validate(self._fields(frame, "subscribe", "idempotency_key"))
        async with self.services.sessionmaker() as session:
            runs = RunService(session, self.principal, self.services)
            run = await runs.create(body, idempotency_key=key)
        # a repeated key: the run an earlier frame (or HTTP request) with it started, followed from seq 0
        reply: dict[str, Any] = {"run": to_read(run).model_dump(mode="json"), "replayed": runs.replayed}
        if subscribe:
            reply[_FOLLOW] = (run.id, 0)
        return reply

    async def _on_subscribe(self, frame: dict[str, Any]) -> dict[str, Any]:
        run_id, after = frame.get("run_id"), frame.get("after", 0)
        if (
            not isinstance(run_id, str)
            or not isinstance(after, int)
            or isinstance(after, bool)
            or not 0 <= after <= MAX_SEQ
        ):
            raise FrameError(
                "invalid_request", f"`subscribe` needs `run_id` (string) and `after` (integer, 0 to {MAX_SEQ})."
            )
        self._check_room(run_id)
        async with self.services.read_sessionmaker() as session:
            await RunRepository(session).get(self.principal.id, run_id)
        return {"run_id": run_id, "after": after, _FOLLOW: (run_id, after)}

    async def _on_unsubscribe(self, frame: dict[str, Any]) -> dict[str, Any]:
        run_id = frame.get("run_id")
        task = self.followers.pop(run_id, None) if isinstance(run_id, str) else None
        if task is None:
            raise FrameError("not_subscribed", f"This socket does not follow run {run_id!r}.")
        task.cancel()
        return {"run_id": run_id}

    async def _on_input(self, frame: dict[str, Any]) -> dict[str, Any]:
        run_id = frame.get("run_id")
        if not isinstance(run_id, str):
            raise FrameError("invalid_request", "`input` needs `run_id`.")
        body = InputCreate.model_validate(self._fields(frame, "run_id"))
        async with self.services.sessionmaker() as session:
            await RunService(session, self.principal, self.services).provide_input(run_id, body)
        return {"run_id": run_id, "request_id": body.request_id}

    async def _on_cancel(self, frame: dict[str, Any]) -> dict[str, Any]:
        run_id = frame.get("run_id")
        if not isinstance(run_id, str):
            raise FrameError("invalid_request", "`cancel` needs `run_id`.")
        async with self.services.sessionmaker() as session:
            # the run.cancelled event arrives on the subscription; do not hold up this socket's frames
            run = await RunService(session, self.principal, self.services).cancel(run_id, settle_within=0)
        return {"run": to_read(run).model_dump(mode="json")}

    # -- subscriptions ---------------------------------------------------------------------------

    def _check_room(self, run_id: str | None) -> None:
        if run_id not in self.followers and len(self.followers) >= self.settings.ws_max_subscriptions:
            raise FrameError(
                "too_many_subscriptions", f"A socket follows at most {self.settings.ws_max_subscriptions} runs."
            )

    def _follow(self, run_id: str, after: int) -> None:
        previous = self.followers.pop(run_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._follower(run_id, after), name=f"ws-follow:{run_id}")
        self.followers[run_id] = task
        task.add_done_callback(lambda t: self.followers.pop(run_id, None) if self.followers.get(run_id) is t else None)

    async def _follower(self, run_id: str, after: int) -> None:
        try:
            await self._relay(run_id, after)
        except Exception as exc:
            # retrieved here, not left on a task nobody awaits: the client hears its subscription ended
            log.error("ws_follow_failed", run_id=run_id, exc_info=exc)
            await self._error(
                None,
                "subscribe",
                "internal_error",
                "Following this run failed; it has been logged. Subscribe again to resume.",
                run_id=run_id,
            )

    async def _relay(self, run_id: str, after: int) -> None:
        last = after
        if after and await self._over_before(run_id, after):
            # a resume after the end of a finished run: nothing is left to send (as HTTP's 204)
            await self._put({"type": "subscription.ended", "run_id": run_id, "last_seq": after})
            return
        async for item in follow(
            self.services.read_sessionmaker,
            self.services.bus,
            run_id,
            after,
            remote=self.services.streams,
            retry_for_s=self.services.settings.storage_retry_s,
        ):
            if isinstance(item, Envelope):
                last = item.seq
                await self.outbox.put(item.json())
            elif isinstance(item, StreamLagged):
                await self._put({"type": "stream.lagged", "run_id": run_id, "last_seq": item.last_seq})
            elif isinstance(item, StreamClosing):
                await self._put(
                    {"type": "stream.closing", "run_id": run_id, "last_seq": item.last_seq, "reason": item.reason}
                )
                return
        await self._put({"type": "subscription.ended", "run_id": run_id, "last_seq": last})

    async def _over_before(self, run_id: str, after: int) -> bool:
        async with self.services.read_sessionmaker() as session:
            run = await session.get(Run, run_id)
            return run is not None and await nothing_after(session, run, after)
