"""Planning a request (one transaction): route it by the version's current status, check its
preconditions and concurrency hints, record the intent; then run the saga (`change_status`, `rollback`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.core import lifecycle, models
from domain.core.automation_versions import find_version, workflow_binding_of
from domain.core.lifecycle import Status
from domain.core.models import Deployment
from domain.core.store import transaction
from domain.deploy.commit import (
    live_versions,
)
from domain.deploy.run import (
    _run,
)
from domain.deploy.saga import (
    DEPLOYABLE_BINDING,
    OPEN,
    D,
    DeployRefused,
    Outcome,
    Request,
    Route,
    Saga,
    check_hints,
)

log = logging.getLogger(__name__)

# Plan


def route(session: Session, version: models.AutomationVersion, requested: str) -> Route:
    """Which flow a requested status means for the version's current status."""
    current = Status(version.status)
    table = {
        (Status.LIVE, Status.READY_TO_LAUNCH): "deploy",
        (Status.LIVE, Status.PAUSED): "resume",
        (Status.LIVE, Status.LIVE): "noop",
        (Status.PAUSED, Status.LIVE): "pause",
        (Status.PAUSED, Status.PAUSED): "noop",
    }
    action = table.get((Status(requested), current))
    if action is None:
        raise lifecycle.InvalidStatusTransition("automation_versions", version.id, current, requested)
    return _route(session, version, action)


def _route(session: Session, version: models.AutomationVersion, action: str) -> Route:
    binding = workflow_binding_of(session, version)
    if action in ("deploy", "resume", "rollback") and (
        binding is None or not binding.wrk_workflow_id or binding.status not in DEPLOYABLE_BINDING
    ):
        raise DeployRefused(
            409,
            "precondition_failed",
            f"automation version {version.id} has no deployable workflow binding",
            binding_status=None if binding is None else binding.status,
        )
    live = live_versions(session, version.tenant_id, version.project_id)
    previous = next((v for v in live if v != version.id), None)
    return Route(
        action,
        version.id,
        version.tenant_id,
        version.project_id,
        Status(version.status).value,
        binding.wrk_workflow_id if binding else None,
        binding.id if binding else None,
        previous if action != "pause" else None,
    )


def rollback_target(session: Session, project: models.Project, to_version_id: str | None) -> models.AutomationVersion:
    """The version a rollback makes Live: the given Archived one, or the one Live before the current
    one (the most recently archived version that was once deployed)."""
    versions = select(models.AutomationVersion).where(
        models.AutomationVersion.tenant_id == project.tenant_id,
        models.AutomationVersion.project_id == project.id,
    )
    if to_version_id is not None:
        target = session.scalars(versions.where(models.AutomationVersion.id == to_version_id)).one_or_none()
        if target is None:
            raise DeployRefused(404, "not_found", f"automation version {to_version_id} not found in this project")
        if target.status != Status.ARCHIVED.value:
            raise DeployRefused(
                409,
                "invalid_status_transition",
                f"a rollback makes an Archived version Live; version {target.id} is {target.status}",
                current_status=target.status,
                requested_status=Status.LIVE.value,
            )
        return target
    target = session.scalars(
        versions.where(
            models.AutomationVersion.status == Status.ARCHIVED.value,
            models.AutomationVersion.deployed_at.is_not(None),
        ).order_by(models.AutomationVersion.status_changed_at.desc(), models.AutomationVersion.version_number.desc())
    ).first()
    if target is None:
        raise DeployRefused(
            409, "nothing_to_roll_back", f"project {project.id} has no earlier Live version to roll back to"
        )
    return target


def _stored_answer(session: Session, tenant_id: str, request: Request) -> Outcome | None:
    """Idempotency-Key: the stored answer of an earlier request with this key, 409 while it runs."""
    if not request.idempotency_key:
        return None
    row = session.scalars(
        select(Deployment).where(
            Deployment.tenant_id == tenant_id, Deployment.idempotency_key == request.idempotency_key
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request.request_hash:
        raise DeployRefused(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request")
    if row.status in OPEN or row.response_status is None:
        raise DeployRefused(
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is still in progress; retry later",
            retry_after=1,
            deployment_id=row.id,
        )
    body = dict(row.response_body or {})
    if row.response_status >= 400:
        raise DeployRefused(row.response_status, body["code"], body["detail"], **dict(body.get("extra") or {}))
    return Outcome(row.response_status, body, row.id, replayed=True)


def _record(session: Session, plan: Route, request: Request, deadline_s: float) -> str:
    now = datetime.now(UTC)
    row = Deployment(
        tenant_id=plan.tenant_id,
        project_id=plan.project_id,
        automation_version_id=plan.version_id,
        action=plan.action,
        status=D.REQUESTED.value,
        from_status=plan.current_status,
        workflow_id=plan.workflow_id,
        previous_live_version_id=plan.previous_live_id,
        actor_type=request.actor.type,
        actor_id=request.actor.id,
        reason=request.reason,
        notes=request.notes,
        invoked_via=request.invoked_via,
        idempotency_key=request.idempotency_key,
        request_hash=request.request_hash,
        deadline_at=now + timedelta(seconds=deadline_s),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def _plan_and_record(
    saga: Saga, request: Request, load: Callable[[Session], tuple[str, Route | Outcome]]
) -> tuple[Route, str] | Outcome:
    """Run `load` (which finds the target and plans) with the idempotency check and the intent row in
    one transaction; a concurrent request with the same key gets its answer or `request_in_progress`."""
    tenant_id: str | None = None
    try:
        with transaction(saga.engine) as session:
            tenant_id, planned = load(session)
            if isinstance(planned, Outcome):
                return planned
            return planned, _record(session, planned, request, saga.deadline_s)
    except IntegrityError:
        # The same key raced us (PostgreSQL: its insert committed while ours waited on it).
        if tenant_id is None or not request.idempotency_key:
            raise
        with transaction(saga.engine) as session:
            stored = _stored_answer(session, tenant_id, request)
        if stored is None:
            raise
        return stored


def change_status(saga: Saga, tenants: frozenset[str], version_id: str, requested: str, request: Request) -> Outcome:
    """`PATCH /v1/automation-versions/{id}/status`: deploy, resume or pause (or the idempotent no-op)."""

    def load(session: Session) -> tuple[str, Route | Outcome]:
        version = find_version(session, tenants, version_id)
        if version is None:
            raise DeployRefused(404, "not_found", f"automation version {version_id} not found")
        stored = _stored_answer(session, version.tenant_id, request)
        if stored is not None:
            return version.tenant_id, stored
        plan = route(session, version, requested)
        check_hints(version, request.hints)  # before any platform call, whatever the action
        if plan.action == "noop":
            return version.tenant_id, Outcome(200, saga.render(session, version), None)
        return version.tenant_id, plan

    planned = _plan_and_record(saga, request, load)
    if isinstance(planned, Outcome):
        return planned
    return _run(saga, *planned)


def rollback(
    saga: Saga, tenants: frozenset[str], project_id: str, to_version_id: str | None, request: Request
) -> Outcome:
    """`POST /v1/projects/{id}/rollback`: the previous Live version (or the given Archived one) Live
    again through the same saga; the current Live version is archived."""

    def load(session: Session) -> tuple[str, Route | Outcome]:
        project = session.scalars(
            select(models.Project).where(models.Project.id == project_id, models.Project.tenant_id.in_(list(tenants)))
        ).one_or_none()
        if project is None:
            raise DeployRefused(404, "not_found", f"project {project_id} not found")
        stored = _stored_answer(session, project.tenant_id, request)
        if stored is not None:
            return project.tenant_id, stored
        target = rollback_target(session, project, to_version_id)
        return project.tenant_id, _route(session, target, "rollback")

    planned = _plan_and_record(saga, request, load)
    if isinstance(planned, Outcome):
        return planned
    return _run(saga, *planned)
