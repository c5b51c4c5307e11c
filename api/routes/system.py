"""Liveness, readiness, the OpenAPI document, and the caller's own identity."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require
from api.openapi import Answer, Endpoint
from api.requests import engine
from domain.core import migrate
from domain.core.store import reader


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    database: str
    revision: str | None = None
    head: str | None = None
    error: str | None = None


class Identity(BaseModel):
    sub: str
    tenants: list[str]
    roles: list[str]
    tenant_roles: dict[str, list[str]]


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    model_config = {"extra": "allow"}

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


async def health(_request: Request) -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


def _database_ready(db: Engine) -> dict[str, Any]:
    db = reader(db)  # a readiness probe must not queue for SQLite's write lock
    try:
        with db.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = migrate.current_revision(db), migrate.head_revision()
    except Exception as exc:  # any failure to reach the store means not ready
        return {"ready": False, "database": "unreachable", "error": type(exc).__name__}
    return {"ready": current == head, "database": "reachable", "revision": current, "head": head}


async def ready(request: Request) -> JSONResponse:
    """The store is reachable and its migrations are at head."""
    state = await run_in_threadpool(_database_ready, engine(request))
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


async def whoami(request: Request) -> JSONResponse:
    principal = require(request)
    return JSONResponse(
        {
            "sub": principal.sub,
            "tenants": sorted(principal.tenants),
            "roles": sorted(principal.roles),
            "tenant_roles": {t: sorted(r) for t, r in sorted(principal.tenant_roles.items())},
        }
    )


ENDPOINTS = [
    Endpoint(
        "GET", "/health", health, "The process is alive", response=Health, auth=False, store=False, tags=["system"]
    ),
    Endpoint(
        "GET",
        "/ready",
        ready,
        "The store is reachable and migrated",
        response=Readiness,
        auth=False,
        store=False,
        answers=[Answer(503, "Not ready: the store is unreachable or its migrations are not at head", Readiness)],
        tags=["system"],
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        "This document",
        response=OpenApiDocument,
        auth=False,
        store=False,
        tags=["system"],
    ),
    Endpoint(
        "GET",
        "/v1/me",
        whoami,
        "The caller's identity, tenants and roles, from the token",
        response=Identity,
        store=False,
        tags=["system"],
    ),
]
