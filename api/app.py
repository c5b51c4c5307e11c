"""The Starlette app factory: an explicit routes table, no hidden globals."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware

from api import http_metrics
from api.auth import Authenticator
from api.middleware import RequestContext
from api.openapi import Endpoint, build_openapi, routes
from api.phase_stream import PhaseStream
from api.problems import EXCEPTION_HANDLERS
from api.request_rules import RequestRules
from api.routes import (
    approval_links,
    approvals,
    automation_versions,
    batch_jobs,
    deploy,
    events,
    inbox,
    live,
    metrics,
    phases,
    projects,
    queue,
    releases,
    system,
    webhooks,
    workflows,
)
from domain.core import logs
from domain.core.settings import Settings, get_settings
from domain.core.store import engine_for
from resources.wrk import wrk_client

ENDPOINTS: list[Endpoint] = [
    *system.ENDPOINTS,
    *automation_versions.ENDPOINTS,
    *deploy.ENDPOINTS,
    *projects.ENDPOINTS,
    *queue.ENDPOINTS,
    *releases.ENDPOINTS,
    *batch_jobs.ENDPOINTS,
    *webhooks.ENDPOINTS,
    *workflows.ENDPOINTS,
    *events.ENDPOINTS,
    *approvals.ENDPOINTS,
    *approval_links.ENDPOINTS,
    *phases.ENDPOINTS,
    *live.ENDPOINTS,
    *metrics.ENDPOINTS,
]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """On start-up, freeze what importing and building the app made out of the garbage collector (as the
    warm run launcher's fork server does: wrk_instance/preload_code.py): ~170,000 objects (SQLAlchemy,
    pydantic, Starlette, the models; no Dagster) that a full collection would otherwise walk, during which
    a worker answers nobody. On shutdown, mark this worker's live gauges dead (api/http_metrics.py) and
    close what the app opened: its outbound HTTP clients (their connection pools), and the store engine
    when the app made it (an engine passed in belongs to the caller)."""
    if gc.get_freeze_count() == 0:  # once per process (a test process builds many apps)
        gc.collect()  # start-up's garbage first: what is frozen is never collected
        gc.freeze()
    try:
        yield
    finally:
        http_metrics.worker_stopped()
        await app.state.phase_stream.close()
        app.state.wrk.close()
        if app.state.owns_engine:
            app.state.engine.dispose()


class RedactAccessTokens(logging.Filter):
    """Uvicorn logs each accepted WebSocket as `"WebSocket <path?query>" [accepted]` on `uvicorn.error`
    (`--no-access-log` does not silence it), so a `?access_token=` would land in the API's log: mask it."""

    _token = re.compile(r"(access_token=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact(arg) for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = self._redact(record.msg)
        return True

    def _redact(self, value: Any) -> Any:
        return self._token.sub(r"\1[redacted]", value) if isinstance(value, str) else value


def _redact_uvicorn_tokens() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RedactAccessTokens) for f in uvicorn_logger.filters):
        uvicorn_logger.addFilter(RedactAccessTokens())


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Starlette:
    settings = settings or get_settings()
    logs.configure("api", settings.log_level, settings.log_format)
    _redact_uvicorn_tokens()
    app = Starlette(
        routes=[*inbox.ROUTES, *routes(ENDPOINTS), *live.WEBSOCKET_ROUTES],
        middleware=[Middleware(RequestContext), Middleware(RequestRules, settings=settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.owns_engine = engine is None
    app.state.engine = engine or engine_for(settings.database_url, settings)
    app.state.authenticator = Authenticator(settings)
    app.state.wrk = wrk_client(settings)
    app.state.phase_stream = PhaseStream(
        app.state.engine, poll_interval_s=settings.phase_stream_poll_s, resync_s=settings.phase_stream_resync_s
    )
    app.state.phase_commits = phases.phase_commits(app.state.engine)
    app.state.metrics_registry = metrics.metrics_registry(app.state.engine, settings)
    app.state.openapi = build_openapi(ENDPOINTS, "WRK orchestration API", "0.1.0")
    return app
