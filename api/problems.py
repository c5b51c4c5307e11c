"""One error mapping: every error leaves the API as application/problem+json (RFC 9457) with a stable
`code`. No stack trace ever reaches a client."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
    TimeoutError as PoolTimeout,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.core.errors import UnknownTenant
from domain.core.lifecycle import InvalidStatusTransition
from domain.deploy import DeployRefused
from domain.queue.queue import DedupConflict, InvalidTrigger, QueueError

log = logging.getLogger("wrk.api")

MEDIA_TYPE = "application/problem+json"

TITLES = {
    "validation_error": "Request validation failed",
    "payload_too_large": "Request body too large",
    "unsupported_media_type": "Unsupported media type",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "conflict": "Conflict",
    "invalid_status_transition": "Invalid status transition",
    "precondition_failed": "Precondition failed",
    "concurrency_conflict": "Concurrent change",
    "deployment_failed": "Deployment failed",
    "idempotency_key_reused": "Idempotency key reused with a different request",
    "tenant_required": "Tenant required",
    "store_unavailable": "Store unavailable",
    "internal_error": "Internal error",
}

# Seconds a client (or GitHub's redelivery) is asked to wait before retrying during a store outage.
STORE_RETRY_AFTER_S = 5


class FieldError(BaseModel):
    field: str
    message: str


class ProblemBody(BaseModel):
    """The problem+json body every error response carries."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or code)
        self.status, self.code, self.detail = status, code, detail
        self.errors, self.headers, self.extra = errors, headers, extra or {}


def validation_problem(error: ValidationError, prefix: str = "") -> Problem:
    errors = [
        {
            "field": prefix + ".".join(str(p) for p in e["loc"]) if e["loc"] else prefix.rstrip(".") or "body",
            "message": e["msg"],
        }
        for e in error.errors()
    ]
    names = ", ".join(e["field"] for e in errors)
    return Problem(422, "validation_error", f"invalid field(s): {names}", errors=errors)


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://docs.wrk.local/problems/{problem.code}",
        "title": TITLES.get(problem.code, problem.code.replace("_", " ").capitalize()),
        "status": problem.status,
        "code": problem.code,
        "detail": problem.detail,
        "instance": request.url.path,
        "request_id": request.scope.get("state", {}).get("request_id"),
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=MEDIA_TYPE)


async def handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc)


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
        exc.status_code, "error"
    )
    return problem_response(request, Problem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return problem_response(request, validation_problem(exc))


async def handle_invalid_transition(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidStatusTransition)
    return problem_response(
        request,
        Problem(
            409,
            "invalid_status_transition",
            str(exc),
            extra={"current_status": exc.current, "requested_status": exc.requested},
        ),
    )


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, Problem(500, "internal_error", "an unexpected error occurred"))


async def handle_queue_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidTrigger):
        return problem_response(request, Problem(422, "validation_error", str(exc), errors=exc.errors))
    if isinstance(exc, DedupConflict):
        return problem_response(request, Problem(409, "conflict", str(exc), extra={"trigger_id": exc.existing_id}))
    return await handle_unexpected(request, exc)


def is_store_unavailable(exc: BaseException) -> bool:
    """The store cannot be reached or cannot take the statement now (server down, connection lost, pool
    exhausted, SQLite busy past its timeout, a serialization failure): retrying later can succeed."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # The queue's hot paths run plain SQL on the driver's connection: its own errors arrive unwrapped.
    return isinstance(
        exc, OperationalError | DisconnectionError | PoolTimeout | psycopg.OperationalError | sqlite3.OperationalError
    )


def is_refused_value(exc: BaseException) -> bool:
    """The store refused a statement for its values (a constraint they break, a value it cannot take):
    the same statement without them can succeed (api/group_commit.py splits a batch to find them)."""
    return isinstance(
        exc,
        UnknownTenant
        | IntegrityError
        | DataError
        | psycopg.IntegrityError
        | psycopg.DataError
        | sqlite3.IntegrityError
        | sqlite3.DataError,
    )


async def handle_store_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_store_unavailable(exc):
        return await handle_unexpected(request, exc)
    log.warning(
        "store unavailable on %s %s: %s",
        request.method,
        request.url.path,
        getattr(exc, "orig", None) or type(exc).__name__,
    )
    return problem_response(
        request,
        Problem(
            503,
            "store_unavailable",
            "the store cannot be reached; retry later",
            headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
        ),
    )


async def handle_deploy_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DeployRefused)
    return problem_response(request, Problem(exc.status, exc.code, exc.detail, extra=exc.extra))


EXCEPTION_HANDLERS = {
    DeployRefused: handle_deploy_refused,
    QueueError: handle_queue_error,
    Problem: handle_problem,
    HTTPException: handle_http_exception,
    ValidationError: handle_validation_error,
    InvalidStatusTransition: handle_invalid_transition,
    SQLAlchemyError: handle_store_error,
    psycopg.Error: handle_store_error,
    sqlite3.Error: handle_store_error,
    Exception: handle_unexpected,
}
