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
from domain.automation_versions import find_version, version_detail
from domain.store import transaction


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
        with transaction(engine(request)) as session:
            version = find_version(session, tenants, version_id)
            return None if version is None else version_detail(session, version)

    detail = await run_in_threadpool(load)
    if detail is None:
        raise not_found(version_id)
    return JSONResponse(AutomationVersionOut.model_validate(detail).model_dump(mode="json"))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/automation-versions/{version_id}",
        get_automation_version,
        "An automation version with its status, workflow binding and latest audit entries",
        response=AutomationVersionOut,
        tenant_header=True,
        errors=[404],
        tags=["automation versions"],
    ),
]
