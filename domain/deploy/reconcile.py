"""Reconciliation: rows past their deadline finished or undone, then the platform compared with the store
both ways (every workflow of a Live version active, every other inactive)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from domain.core import counters, lifecycle, models
from domain.core.errors import ExternalServiceError
from domain.core.lifecycle import Actor
from domain.core.models import Deployment
from domain.core.store import transaction
from domain.deploy.commit import (
    _alert,
    _finish,
    _lock_row,
    live_versions,
)
from domain.deploy.run import (
    _after_commit,
    _Clock,
    _commit,
    _Committed,
    _is_active,
    restore_platform,
)
from domain.deploy.saga import (
    OPEN,
    RECONCILE_GRACE,
    D,
    DeadlineExceeded,
    DeployRefused,
    Route,
    Saga,
)

log = logging.getLogger(__name__)

# Reconciliation


@dataclass
class Reconciliation:
    finished: list[str] = field(default_factory=list)  # deployment ids committed by reconciliation
    undone: list[str] = field(default_factory=list)  # deployment ids compensated or failed
    activated: list[str] = field(default_factory=list)  # workflow ids
    deactivated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # deployments or workflows it could not settle
    checked: int = 0

    @property
    def acted(self) -> bool:
        return bool(self.finished or self.undone or self.activated or self.deactivated or self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "undone": self.undone,
            "activated": self.activated,
            "deactivated": self.deactivated,
            "failed": self.failed,
            "checked": self.checked,
        }


def reconcile(saga: Saga, now: datetime | None = None) -> Reconciliation:
    """Finish or undo every deployment whose request gave up or died (open past its deadline), then
    make the platform run exactly the workflows of Live versions. Audits each act; alerts ops when it
    had to act. Safe to run at any time, also while requests are served: it leaves in-flight
    deployments alone and re-reads the store after each platform change."""
    now = now or datetime.now(UTC)
    report = Reconciliation()
    with transaction(saga.engine) as session:
        stale = list(
            session.scalars(
                select(Deployment.id)
                .where(Deployment.status.in_(OPEN), Deployment.deadline_at <= now - RECONCILE_GRACE)
                .order_by(Deployment.created_at)
            )
        )
    for deployment_id in stale:
        try:
            _settle(saga, deployment_id, report)
        except (ExternalServiceError, DeadlineExceeded, SQLAlchemyError) as exc:
            log.warning("deployment %s could not be reconciled: %r", deployment_id, exc)
            report.failed.append(deployment_id)
    _sweep(saga, report)
    if report.acted:
        _alert(
            saga,
            None,
            "Deploy reconciliation had to act" + (" (and could not settle everything)" if report.failed else ""),
            json.dumps(report.as_dict(), indent=2),
            "deploy_reconciliation",
        )
    return report


def _settle(saga: Saga, deployment_id: str, report: Reconciliation) -> None:
    clock = _Clock(saga.deadline_s)
    reconciler = Actor.system("reconciliation")
    with transaction(saga.engine) as session:
        row = _lock_row(session, deployment_id)
        if row.status not in OPEN:
            return
        if row.status == D.REQUESTED.value:
            # Died before `activating` was committed: the platform was never called.
            row.error = {"code": "interrupted", "detail": "the request ended before the platform was called"}
            _finish(session, row, D.FAILED, 502, _interrupted(row).stored())
            _audit(session, row, reconciler, "deployment_failed")
            counters.count(session, "deploy_reconciliation_acts", {"act": "undone"})
            report.undone.append(row.id)
            return
        plan = Route(
            row.action,
            row.automation_version_id,
            row.tenant_id,
            row.project_id,
            row.from_status,
            row.workflow_id,
            None,
            row.previous_live_version_id,
        )
    assert plan.workflow_id is not None
    refused_already = (row.error or {}).get("answer")
    active = _is_active(saga.platform, plan.workflow_id, clock)
    committed: _Committed | None = None
    if active == plan.wants_active and refused_already is None:
        # The platform did what was asked: finish it, if nothing moved in the store meanwhile.
        try:
            with transaction(saga.engine) as session:
                row = _lock_row(session, deployment_id)
                if row.status not in OPEN:
                    return
                if plan.action != "pause" and live_versions(session, plan.tenant_id, plan.project_id) != (
                    [plan.previous_live_id] if plan.previous_live_id else []
                ):
                    raise DeployRefused(409, "concurrency_conflict", "the project's Live version changed meanwhile")
                row.invoked_via = f"{row.invoked_via}+reconciliation"
                committed = _commit(saga, session, plan, row)
                _audit(session, row, reconciler, "deployment_finished")
                counters.count(session, "deploy_reconciliation_acts", {"act": "finished"})
        except (DeployRefused, lifecycle.InvalidStatusTransition, IntegrityError):
            committed = None
    if committed is not None:
        report.finished.append(deployment_id)
        _after_commit(saga, plan, committed, clock, active)
        return
    # Undo: the store did not move; the platform follows it.
    restore_platform(saga, plan.tenant_id, plan.version_id, plan.workflow_id, clock, exclude=deployment_id)
    with transaction(saga.engine) as session:
        row = _lock_row(session, deployment_id)
        if row.status not in OPEN:
            return
        answer = dict((row.error or {}).get("answer") or {})
        status = int(answer.pop("status", 0)) or 502
        row.error = {**(row.error or {}), "reconciled": "undone"}
        _finish(session, row, D.COMPENSATED, status, answer or _interrupted(row).stored())
        _audit(session, row, reconciler, "deployment_compensated")
        counters.count(session, "deploy_reconciliation_acts", {"act": "undone"})
        counters.count(session, "deploy_compensations")
    report.undone.append(deployment_id)


def _interrupted(row: Deployment) -> DeployRefused:
    return DeployRefused(
        502,
        "deployment_failed",
        f"the {row.action} was interrupted and undone by reconciliation; the version stayed {row.from_status}",
        status_unchanged=row.from_status,
        deployment_id=row.id,
    )


def _audit(session: Session, row: Deployment, actor: Actor, action: str) -> None:
    lifecycle.record(
        session,
        tenant_id=row.tenant_id,
        entity_type="deployments",
        entity_id=row.id,
        action=action,
        actor=actor,
        reason=row.reason,
        metadata={
            "automation_version_id": row.automation_version_id,
            "deployment_action": row.action,
            "workflow_id": row.workflow_id,
            "requested_by": row.actor_id,
            "error": row.error,
        },
    )


def _sweep(saga: Saga, report: Reconciliation) -> None:
    """Every bound workflow: active on the platform exactly when its version is Live. Versions with a
    deployment in flight are its business, not ours."""
    with transaction(saga.engine) as session:
        rows = session.execute(
            select(
                models.WorkflowBinding.id,
                models.WorkflowBinding.tenant_id,
                models.WorkflowBinding.wrk_workflow_id,
                models.AutomationVersion.id,
            )
            .join(
                models.AutomationVersion,
                (models.AutomationVersion.tenant_id == models.WorkflowBinding.tenant_id)
                & (models.AutomationVersion.id == models.WorkflowBinding.automation_version_id),
            )
            .where(models.WorkflowBinding.wrk_workflow_id.is_not(None))
            .order_by(models.WorkflowBinding.created_at)
        ).all()
    report.checked = len(rows)
    for binding_id, tenant_id, workflow_id, version_id in rows:
        clock = _Clock(saga.deadline_s)
        with transaction(saga.engine) as session:
            in_flight = session.scalar(
                select(Deployment.id).where(
                    Deployment.tenant_id == tenant_id,
                    Deployment.automation_version_id == version_id,
                    Deployment.status.in_(OPEN),
                )
            )
        if in_flight is not None:
            continue
        try:
            done = restore_platform(saga, tenant_id, version_id, workflow_id, clock)
        except (ExternalServiceError, DeadlineExceeded) as exc:
            log.warning("workflow %s could not be reconciled: %r", workflow_id, exc)
            report.failed.append(workflow_id)
            continue
        if done is None:
            continue
        (report.activated if done == "activated" else report.deactivated).append(workflow_id)
        with transaction(saga.engine) as session:
            lifecycle.record(
                session,
                tenant_id=tenant_id,
                entity_type="workflow_bindings",
                entity_id=binding_id,
                action=f"workflow_{done}",
                actor=Actor.system("reconciliation"),
                metadata={"workflow_id": workflow_id, "automation_version_id": version_id},
            )
            # The platform ran a workflow the store did not want running, or the reverse.
            counters.count(session, "deploy_reconciliation_acts", {"act": done})
            counters.count(session, "deploy_drift")
