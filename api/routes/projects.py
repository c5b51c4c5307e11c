"""One-call rollback: `POST /v1/projects/{id}/rollback` makes the previous Live version (or a given
Archived one) Live again through the deploy saga, and archives the current one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require, tenant_scope
from api.openapi import Endpoint
from api.requests import json_body
from api.routes.automation_versions import AutomationVersionOut
from api.routes.deploy import IDEMPOTENCY_KEY, answer, deploy_request, saga
from domain import deploy
from domain.core.lifecycle import Actor


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_version_id: str | None = Field(default=None, description="an Archived version; default: the previous Live one")
    reason: str | None = Field(default=None, max_length=2000)
    notes: str | None = Field(default=None, max_length=10000)


async def rollback(request: Request) -> JSONResponse:
    principal = require(request, OPS_ROLES)
    tenants = tenant_scope(request, principal)
    project_id = request.path_params["project_id"]
    body = await json_body(request, Rollback)
    asked = deploy_request(request, Actor.user(principal.sub), body, reason=body.reason, notes=body.notes)
    return await answer(lambda: deploy.rollback(saga(request), tenants, project_id, body.to_version_id, asked))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/projects/{project_id}/rollback",
        rollback,
        "Roll back: the previous Live version (or the given Archived one) Live again, the current one archived",
        request=Rollback,
        response=AutomationVersionOut,
        tenant_header=True,
        errors={
            404: ["not_found"],
            409: [
                "invalid_status_transition",
                "precondition_failed",
                "concurrency_conflict",
                "request_in_progress",
                "nothing_to_roll_back",
            ],
            422: ["idempotency_key_reused"],
            500: ["deployment_failed"],
            502: ["deployment_failed"],
            503: ["deadline_exceeded"],
        },
        headers=[IDEMPOTENCY_KEY],
        tags=["projects"],
    ),
]
