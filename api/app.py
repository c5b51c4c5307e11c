"""The Starlette app factory: an explicit routes table, no hidden globals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain import migrate
from domain.settings import Settings, get_settings
from domain.store import engine_for


async def health(_request: Request) -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


def _database_ready(engine: Engine) -> dict[str, Any]:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except Exception as exc:  # any failure to reach the store means not ready
        return {"ready": False, "database": "unreachable", "error": type(exc).__name__}
    return {"ready": current == head, "database": "reachable", "revision": current, "head": head}


async def ready(request: Request) -> JSONResponse:
    """The store is reachable and its migrations are at head."""
    from starlette.concurrency import run_in_threadpool

    state = await run_in_threadpool(_database_ready, request.app.state.engine)
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Starlette:
    settings = settings or get_settings()
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
        ]
    )
    app.state.settings = settings
    app.state.engine = engine or engine_for(settings.database_url)
    return app
