"""Exceptions of the service, and their one JSON error shape, registered once in create_app.

Every error body is an `ErrorResponse`, {"error": {"message", "type", "param", "code"}}
(OpenAI's shape), so the same clients that read OpenAI errors read ours. The engine's own
exceptions (app/scheduler.py) are mapped to their HTTP answers here too.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.scheduler import QueueFull

log = logging.getLogger(__name__)

MAX_ERRORS = 10  # validation errors reported per request


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class APIError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.headers = message, param, code, headers

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.message, self.type, self.param, self.code, self.headers
        )


class InvalidInput(APIError):
    """Valid JSON of the right types that still cannot be served (e.g. no tokens left)."""

    status = 422


class Conflict(APIError):
    """The resource exists but cannot give what was asked (a model with no ARPA form)."""

    status = 409


class NotFound(APIError):
    status = 404
    type = "not_found_error"


class Overloaded(APIError):
    status = 503
    type = "overloaded_error"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, code="overloaded", headers={"Retry-After": str(retry_after)})


class Timeout(APIError):
    status = 504
    type = "timeout_error"


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFull)
    return Overloaded(f"{exc}; retry shortly").response()


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            400, "request body is not valid JSON", param="body", code="json_invalid"
        )
    # A body read by several dependencies reports its errors once; at most MAX_ERRORS.
    messages = list(dict.fromkeys(f"{_location(tuple(e['loc']))}: {e['msg']}" for e in errors))
    if len(messages) > MAX_ERRORS:
        messages[MAX_ERRORS:] = [f"and {len(messages) - MAX_ERRORS} more errors"]
    first = errors[0] if errors else {"loc": ("body",), "type": "invalid"}
    return error_response(
        422, "; ".join(messages), param=_location(tuple(first["loc"])), code=str(first.get("type"))
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = [
        method
        for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(
        exc.status_code, str(exc.detail), code=str(exc.status_code), headers=headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error", "server_error", code="internal_error")


def register(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    text = {
        400: "Malformed JSON",
        401: "Missing or wrong API key",
        404: "Unknown model or corpus",
        409: "The model has no such form (the message says why)",
        413: "Request body too large",
        422: "Invalid field (the message names it and its limit)",
        503: "Overloaded or not ready; retry after the Retry-After seconds",
        504: "The request ran past its time limit",
    }
    return {s: {"description": text[s], "model": ErrorResponse} for s in statuses}
