"""Flow 24 / 24B over HTTP: `PATCH /v1/automation-versions/{id}/status` deploys, resumes or pauses.

HTTP only: authentication, the body, the answer. The saga (plan, platform calls, commit,
compensation, alerts) is `domain.deploy`, shared with the CLI and the reconciliation job.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require, tenant_scope
from api.openapi import Endpoint
from api.params import Header
from api.problems import Problem
from api.requests import engine, json_body
from api.routes.automation_versions import AutomationVersionOut
from domain import deploy
from domain.core import models
from domain.core.automation_versions import version_detail
from domain.core.lifecycle import Actor
from domain.core.settings import Settings


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    status: Literal["Live", "Paused"]
    last_known_status: str | None = None
    last_known_updated_at: datetime | None = None
    deployment_reason: str | None = Field(default=None, max_length=2000)
    notes: str | None = Field(default=None, max_length=10000)


IDEMPOTENCY_KEY = Header("Idempotency-Key", description="a repeat with the same key and request replays the answer")


def render(session: Session, version: models.AutomationVersion) -> dict[str, Any]:
    return AutomationVersionOut.model_validate(version_detail(session, version)).model_dump(mode="json")


def saga(request: Request) -> deploy.Saga:
    settings: Settings = request.app.state.settings
    return deploy.Saga(
        engine=engine(request),
        platform=request.app.state.wrk,
        ops_email=settings.ops_email,
        deadline_s=settings.deploy_deadline_s,
        project_live=settings.project_live_on_deploy,
        slack=bool(settings.slack_webhook_url),
        render=render,
    )


def deploy_request(request: Request, actor: Actor, body: BaseModel, **fields: Any) -> deploy.Request:
    """The saga's view of an HTTP request; the Idempotency-Key covers the method, path and body."""
    return deploy.Request(
        actor=actor,
        invoked_via="api",
        idempotency_key=request.headers.get("idempotency-key") or None,
        request_hash=deploy.request_hash(request.method, request.url.path, body.model_dump(mode="json")),
        **fields,
    )


async def answer(call: Callable[[], deploy.Outcome]) -> JSONResponse:
    try:
        outcome = await run_in_threadpool(call)
    except deploy.DeployRefused as refused:
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after is not None else None
        raise Problem(refused.status, refused.code, refused.detail, extra=refused.extra, headers=headers) from refused
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


async def change_status(request: Request) -> JSONResponse:
    principal = require(request, OPS_ROLES)
    tenants = tenant_scope(request, principal)
    version_id = request.path_params["version_id"]
    change = await json_body(request, StatusChange)
    asked = deploy_request(
        request,
        Actor.user(principal.sub),
        change,
        reason=change.deployment_reason,
        notes=change.notes,
        hints=deploy.Hints(change.last_known_status, change.last_known_updated_at),
    )
    return await answer(lambda: deploy.change_status(saga(request), tenants, version_id, change.status, asked))


ENDPOINTS = [
    Endpoint(
        "PATCH",
        "/v1/automation-versions/{version_id}/status",
        change_status,
        "Deploy (Ready to Launch -> Live), resume (Paused -> Live) or pause (Live -> Paused) a version",
        request=StatusChange,
        response=AutomationVersionOut,
        tenant_header=True,
        errors={
            404: ["not_found"],
            409: [
                "invalid_status_transition",
                "precondition_failed",
                "concurrency_conflict",
                "request_in_progress",
            ],
            422: ["idempotency_key_reused"],
            500: ["deployment_failed"],
            502: ["deployment_failed"],
            503: ["deadline_exceeded"],
        },
        headers=[IDEMPOTENCY_KEY],
        tags=["automation versions"],
    ),
]
