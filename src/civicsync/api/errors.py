"""One error format for every 4xx/5xx the API sends, and the handlers that produce it.

Every error body is ``{"error": CODE, "message": TEXT, "fields": [{"field", "message", "type"}]}``;
``fields`` names what was wrong in the request (``items.3.citizen_id``, ``query.flow``) and is
empty when no single field is at fault. A database that is down gives 503 with ``Retry-After``;
nothing of the request is written then (one transaction per request).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from civicsync.errors import CivicsyncError, DatabaseUnavailableError

log = logging.getLogger("civicsync.api")

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "request_timeout", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         422: "validation_failed", 500: "internal", 503: "unavailable"}
# Union members of a body that is "one item or a batch" (see civicsync.api.models) are not fields.
_UNION_TAGS = frozenset({"item", "batch"})


class FieldError(BaseModel):
    """One thing wrong with a request, and where."""

    field: str = Field(description="dotted path: a body field (items.3.citizen_id), query.NAME or body")
    message: str
    type: str = Field(description="machine-readable kind, e.g. missing, extra_forbidden, unknown_reference")


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="bad_request, unauthorized, forbidden, not_found, conflict, payload_too_large, "
                                   "validation_failed, unavailable, internal, ...")
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ApiError(CivicsyncError):
    """Raised by handlers for an error response with named fields."""

    def __init__(self, status: int, message: str, fields: Sequence[FieldError] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = list(fields)
        self.headers = headers


def error_response(status: int, message: str, fields: Sequence[FieldError] = (),
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response in the API's format."""
    body = ErrorBody(error=CODES.get(status, f"http_{status}"), message=message, fields=list(fields))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_path(loc: Sequence[int | str]) -> str:
    """pydantic's error location as the dotted field path the caller sees."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
        if parts and parts[0] in _UNION_TAGS:
            parts = parts[1:]
        if not parts:
            return "body"
    return ".".join(str(p) for p in parts)


def _validation_fields(errors: Sequence[Any]) -> list[FieldError]:
    fields = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        elif err.get("type") == "json_invalid":
            message = f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"
        fields.append(FieldError(field=field_path(err.get("loc", ())), message=message,
                                 type=str(err.get("type", "invalid"))))
    return _unique(fields)


def _unique(fields: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in fields:
        if (f.field, f.message) not in seen:
            seen.add((f.field, f.message))
            out.append(f)
    return out


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    """Route every error through :func:`error_response`."""

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = _validation_fields(jsonable_encoder(exc.errors()))
        summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
        return error_response(422, f"invalid request: {summary}", fields)

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.fields, exc.headers)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("API request refused, database unavailable: %s", exc)
        return error_response(503, f"a database is unavailable, retry later: {exc}",
                              headers={"Retry-After": str(retry_after_seconds)})

    async def internal(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, CivicsyncError):
            log.error("API request failed: %s", exc)
        else:
            log.exception("API request failed")
        return error_response(500, "internal error; the request was not applied (see the service log)")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(DatabaseUnavailableError, unavailable)
    app.add_exception_handler(CivicsyncError, internal)
    app.add_exception_handler(Exception, internal)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body cannot be read at all (e.g. not UTF-8)"},
    401: {"model": ErrorBody, "description": "no key, or a malformed, unknown or revoked key"},
    403: {"model": ErrorBody, "description": "the key lacks the scope this operation needs"},
    413: {"model": ErrorBody, "description": "request body larger than the configured limit"},
    422: {"model": ErrorBody, "description": "invalid request; `fields` names each field at fault"},
    500: {"model": ErrorBody, "description": "unexpected error; nothing was written"},
    503: {"model": ErrorBody, "description": "a database is unavailable; retry after `Retry-After` seconds",
          "headers": {"Retry-After": {"description": "seconds to wait before retrying",
                                      "schema": {"type": "integer"}}}},
}
"""Error responses every operation documents (operations add 404/409 where they can happen)."""


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses ``statuses`` (for a route's ``responses=``)."""
    return {s: ERROR_RESPONSES.get(s, {"model": ErrorBody}) for s in statuses}
