"""The typed error hierarchy and its one rendering: RFC 9457 ``application/problem+json``.

Domain code raises these; one set of handlers turns them (and FastAPI's own
validation and routing errors) into problems with a stable ``code``. An
unexpected exception becomes a bare 500 ``internal_error``: its text is
logged, never sent.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://swarmdirector.dev/problems/"

log = structlog.get_logger(__name__)


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the bad value is, e.g. `['body', 'members', 1]`.")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="A stable machine-readable kind of error.")


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="A URI naming the kind of problem; stable.", examples=[PROBLEM_BASE + "not_found"])
    title: str = Field(description="A short human summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    code: str = Field(description="A stable machine-readable error code.", examples=["not_found"])
    detail: str | None = Field(default=None, description="What went wrong in this occurrence.")
    instance: str | None = Field(default=None, description="The request path.")
    errors: list[FieldError] | None = Field(default=None, description="Field errors, for invalid input.")


class AppError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if code is not None:
            self.code = code
        self.errors = errors
        self.headers = headers


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidSpec(AppError):
    status, code, title = 422, "invalid_spec", "Invalid specification"

    @classmethod
    def at(cls, loc: list[str | int], msg: str, *, code: str = "invalid_spec") -> InvalidSpec:
        return cls(msg, code=code, errors=[FieldError(loc=loc, msg=msg, type=code)])


class BadRequest(AppError):
    status, code, title = 400, "bad_request", "Bad request"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class Unavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + code,
        title=title,
        status=status,
        code=code,
        detail=detail,
        instance=request.url.path,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_UNDECODABLE: dict[type[BaseException], str] = {
    UnicodeDecodeError: "The request body is not valid JSON (it must be UTF-8).",
    RecursionError: "The request body is not valid JSON here: it is nested too deeply.",
}


def _loc(raw: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in raw]


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path: Starlette's 405 names only the first route's."""
    routes: list[BaseRoute] = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(
            request,
            status=exc.status,
            code=exc.code,
            title=exc.title,
            detail=exc.detail,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        if any(e.get("type") == "json_invalid" for e in raw):
            return problem_response(
                request,
                status=400,
                code="malformed_json",
                title="Malformed JSON",
                detail="The request body is not valid JSON.",
            )
        errors = [
            FieldError(loc=_loc(e.get("loc", ())), msg=str(e.get("msg", "")), type=str(e.get("type", ""))) for e in raw
        ]
        where = ", ".join(".".join(str(p) for p in e.loc) for e in errors[:3])
        return problem_response(
            request,
            status=422,
            code="invalid_request",
            title="Invalid request",
            detail=f"Invalid value at {where}." if where else "Invalid request.",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI reports a JSON body it cannot decode (not UTF-8, nested too deep, a number of
            # thousands of digits) as a bare 400, not as a JSON error
            return problem_response(
                request,
                status=400,
                code="malformed_json",
                title="Malformed JSON",
                detail=_UNDECODABLE.get(type(exc.__cause__), "The request body is not valid JSON."),
            )
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}
        return problem_response(
            request,
            status=exc.status_code,
            code=code,
            title=title,
            detail=detail,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, exc_info=exc)
        return problem_response(
            request,
            status=500,
            code="internal_error",
            title="Internal error",
            detail="An unexpected error occurred; it has been logged.",
        )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries declaring problem+json for the given statuses."""
    return {
        s: {
            "model": Problem,
            "content": {PROBLEM_JSON: {}},
            "description": _HTTP_CODES.get(s, ("", "Error"))[1],
        }
        for s in statuses
    }
