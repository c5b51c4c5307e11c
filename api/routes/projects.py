"""Projects as ops deploy them: a project's deploy status (its Live version and every version's status),
its deploy history (the deployments rows, newest first), and the one-call rollback: `POST
/v1/projects/{id}/rollback` makes the previous Live version (or a given Archived one) Live again through
the deploy saga, and archives the current one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require, tenant_scope
from api.openapi import Endpoint
from api.params import Integer
from api.problems import Problem
from api.requests import engine, json_body
from api.routes.automation_versions import AutomationVersionOut
from api.routes.deploy import IDEMPOTENCY_KEY, answer, deploy_request, saga
from domain import deploy
from domain.core.lifecycle import Actor
from domain.core.models import AutomationVersion, Deployment, Project
from domain.core.statuses import Status
from domain.core.store import read_transaction

LIMIT = Integer("limit", 50, 1, 200)
OFFSET = Integer("offset", 0, 0, 10**9)


class ProjectVersion(BaseModel):
    id: str
    version_number: int
    status: str
    status_changed_at: datetime
    deployed_at: datetime | None
    deployed_by: str | None


class DeploymentOut(BaseModel):
    """One deploy, resume, pause or rollback as it was asked and how it ended (without the request's
    idempotency key, hash and replayed answer, which stay in the store)."""

    id: str
    automation_version_id: str
    version_number: int | None
    action: str
    status: str
    from_status: str
    previous_live_version_id: str | None
    actor_type: str
    actor_id: str
    reason: str | None
    notes: str | None
    invoked_via: str
    error: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


class ProjectStatus(BaseModel):
    id: str
    tenant_id: str
    name: str
    status: str
    status_changed_at: datetime
    live_version: ProjectVersion | None
    versions: list[ProjectVersion]
    last_deployment: DeploymentOut | None


class DeploymentList(BaseModel):
    items: list[DeploymentOut]
    total: int
    limit: int
    offset: int


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


def _project(session: Session, tenants: frozenset[str], project_id: str) -> Project | None:
    found: Project | None = session.scalars(
        select(Project).where(Project.id == project_id, Project.tenant_id.in_(list(tenants)))
    ).one_or_none()
    return found


def _deployments(session: Session, project: Project, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Deployment, AutomationVersion.version_number)
        .join(
            AutomationVersion,
            (AutomationVersion.tenant_id == Deployment.tenant_id)
            & (AutomationVersion.id == Deployment.automation_version_id),
            isouter=True,
        )
        .where(Deployment.tenant_id == project.tenant_id, Deployment.project_id == project.id)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [
        DeploymentOut.model_validate(
            {**{c: getattr(row, c) for c in DeploymentOut.model_fields if c != "version_number"}, "version_number": n}
        ).model_dump(mode="json")
        for row, n in rows
    ]


def _not_found(project_id: str) -> Problem:
    return Problem(404, "not_found", f"project {project_id} not found")


async def project_status(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)
    project_id = request.path_params["project_id"]

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            project = _project(session, tenants, project_id)
            if project is None:
                return None
            versions = [
                ProjectVersion.model_validate(v, from_attributes=True).model_dump(mode="json")
                for v in session.scalars(
                    select(AutomationVersion)
                    .where(AutomationVersion.tenant_id == project.tenant_id, AutomationVersion.project_id == project.id)
                    .order_by(AutomationVersion.version_number.desc())
                )
            ]
            live = [v for v in versions if v["status"] == Status.LIVE.value]
            last = _deployments(session, project, 1, 0)
            return {
                "id": project.id,
                "tenant_id": project.tenant_id,
                "name": project.name,
                "status": project.status,
                "status_changed_at": project.status_changed_at,
                "live_version": live[0] if live else None,
                "versions": versions,
                "last_deployment": last[0] if last else None,
            }

    found = await run_in_threadpool(load)
    if found is None:
        raise _not_found(project_id)
    return JSONResponse(ProjectStatus.model_validate(found).model_dump(mode="json"))


async def deploy_history(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)
    project_id = request.path_params["project_id"]
    limit, offset = LIMIT.read(request), OFFSET.read(request)
    assert limit is not None and offset is not None

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            project = _project(session, tenants, project_id)
            if project is None:
                return None
            total = session.scalar(
                select(func.count())
                .select_from(Deployment)
                .where(Deployment.tenant_id == project.tenant_id, Deployment.project_id == project.id)
            )
            return {"items": _deployments(session, project, limit, offset), "total": total or 0}

    page = await run_in_threadpool(load)
    if page is None:
        raise _not_found(project_id)
    return JSONResponse(
        DeploymentList.model_validate(page | {"limit": limit, "offset": offset}).model_dump(mode="json")
    )


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/projects/{project_id}",
        project_status,
        "A project's deploy status: its Live version, every version's status and the last deployment",
        response=ProjectStatus,
        tenant_header=True,
        errors={404: ["not_found"]},
        tags=["projects"],
    ),
    Endpoint(
        "GET",
        "/v1/projects/{project_id}/deployments",
        deploy_history,
        "A project's deploy history: every deploy, resume, pause and rollback, newest first",
        response=DeploymentList,
        tenant_header=True,
        query=[LIMIT, OFFSET],
        errors={404: ["not_found"]},
        tags=["projects"],
    ),
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
