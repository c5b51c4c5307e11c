"""The Starlette app factory: an explicit routes table, no hidden globals."""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware

from api.auth import Authenticator
from api.middleware import RequestContext
from api.openapi import Endpoint, build_openapi
from api.problems import EXCEPTION_HANDLERS
from api.routes import automation_versions, deploy, projects, queue, releases, system, webhooks
from domain.settings import Settings, get_settings
from domain.store import engine_for
from resources.wrk import wrk_client

ENDPOINTS: list[Endpoint] = [
    *system.ENDPOINTS,
    *automation_versions.ENDPOINTS,
    *deploy.ENDPOINTS,
    *projects.ENDPOINTS,
    *queue.ENDPOINTS,
    *releases.ENDPOINTS,
    *webhooks.ENDPOINTS,
]


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Starlette:
    settings = settings or get_settings()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # outbound calls are logged by the clients' retries
    app = Starlette(
        routes=[endpoint.route() for endpoint in ENDPOINTS],
        middleware=[Middleware(RequestContext)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.engine = engine or engine_for(settings.database_url)
    app.state.authenticator = Authenticator(settings)
    app.state.wrk = wrk_client(settings)
    app.state.openapi = build_openapi(ENDPOINTS, "WRK orchestration API", "0.1.0")
    return app
