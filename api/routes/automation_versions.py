"""Automation versions: the read side a client follows a build or a deploy with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require, tenant_scope
from api.openapi import Endpoint
from api.problems import Problem
from api.requests import engine
from domain.build import build
from domain.core.automation_versions import find_version, version_detail
from domain.core.lifecycle import Actor
from domain.core.models import TriggerQueue
from domain.core.store import read_transaction, transaction


class ProjectRef(BaseModel):
    id: str
    name: str
    status: str


class WorkflowBindingOut(BaseModel):
    id: str
    status: str
    wrk_workflow_id: str | None
    wrk_workflow_url: str | None
    error: dict[str, Any] | None


class AuditEntry(BaseModel):
    id: int
    action: str
    actor_type: str
    actor_id: str
    previous_status: str | None
    new_status: str | None
    reason: str | None
    metadata: dict[str, Any]
    created_at: datetime


class AutomationVersionOut(BaseModel):
    id: str
    tenant_id: str
    project: ProjectRef
    version_number: int
    status: str
    status_changed_at: datetime
    updated_at: datetime
    deployed_at: datetime | None
    deployed_by: str | None
    deployment_reason: str | None
    workflow_binding: WorkflowBindingOut | None
    audit: list[AuditEntry]


def not_found(version_id: str) -> Problem:
    return Problem(404, "not_found", f"automation version {version_id} not found")


async def get_automation_version(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)
    version_id = request.path_params["version_id"]

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            version = find_version(session, tenants, version_id)
            return None if version is None else version_detail(session, version)

    detail = await run_in_threadpool(load)
    if detail is None:
        raise not_found(version_id)
    return JSONResponse(AutomationVersionOut.model_validate(detail).model_dump(mode="json"))


BUILD_ROLES = frozenset({"ops_admin", "ops_build", "admin"})


class BuildAccepted(BaseModel):
    trigger_id: int
    automation_version_id: str
    status: str
    queue_state: str
    follow: dict[str, str]


async def build_automation_version(request: Request) -> JSONResponse:
    principal = require(request, BUILD_ROLES)
    tenants = tenant_scope(request, principal)
    version_id = request.path_params["version_id"]

    def apply() -> dict[str, Any] | None:
        with transaction(engine(request)) as session:
            version = find_version(session, tenants, version_id, for_update=True)
            if version is None:
                return None
            trigger_id = build.request_build(session, version, Actor.user(principal.sub))
            row = session.get(TriggerQueue, trigger_id)
            assert row is not None
            return {
                "trigger_id": trigger_id,
                "automation_version_id": version.id,
                "status": version.status,
                "queue_state": row.state,
                "follow": {
                    "automation_version": f"/v1/automation-versions/{version.id}",
                    "trigger": f"/v1/queue/{trigger_id}",
                },
            }

    accepted = await run_in_threadpool(apply)
    if accepted is None:
        raise not_found(version_id)
    return JSONResponse(
        BuildAccepted.model_validate(accepted).model_dump(mode="json"),
        status_code=202,
        headers={"Location": accepted["follow"]["trigger"]},
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/automation-versions/{version_id}/build",
        build_automation_version,
        "Request a build (Flow 22): the version moves to Build in Progress and a build trigger is queued",
        response=BuildAccepted,
        status=202,
        tenant_header=True,
        errors={404: ["not_found"], 409: ["invalid_status_transition"]},
        tags=["automation versions"],
    ),
    Endpoint(
        "GET",
        "/v1/automation-versions/{version_id}",
        get_automation_version,
        "An automation version with its status, workflow binding and latest audit entries",
        response=AutomationVersionOut,
        tenant_header=True,
        errors={404: ["not_found"]},
        tags=["automation versions"],
    ),
]
