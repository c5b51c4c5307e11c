"""The commits of the saga, inside the caller's transaction: under the project's lock, the version Live
(previous Live archived) or Paused, bindings flipped, audited and notified, and the deployment row's moves."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain.core import counters, lifecycle, models, notifications
from domain.core.automation_versions import workflow_binding_of
from domain.core.lifecycle import Actor, Status
from domain.core.models import BindingStatus, Deployment, DeploymentStatus, NotificationChannel
from domain.core.store import transaction
from domain.deploy import history
from domain.deploy.saga import (
    DEPLOYMENT_TRANSITIONS,
    DeployRefused,
    Hints,
    Route,
    Saga,
    check_hints,
)

log = logging.getLogger(__name__)

# Commits (inside the caller's transaction)


def _lock(session: Session, plan: Route) -> tuple[models.Project, models.AutomationVersion]:
    # The project row first: every deploy of a project queues here, so they run one at a time.
    project = session.scalars(
        select(models.Project)
        .where(
            models.Project.tenant_id == plan.tenant_id,
            models.Project.id == plan.project_id,
        )
        .with_for_update()
    ).one()
    version = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == plan.tenant_id,
            models.AutomationVersion.id == plan.version_id,
        )
        .with_for_update()
    ).one()
    return project, version


def _lock_row(session: Session, deployment_id: str) -> Deployment:
    return session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()).one()


def _move(session: Session, deployment_id: str, to: DeploymentStatus) -> None:
    """One guarded statement (one round trip): the row moves only from a status the table allows."""
    allowed_from = [s.value for s, moves in DEPLOYMENT_TRANSITIONS.items() if to in moves]
    moved = session.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.status.in_(allowed_from))
        .values(status=to.value)
        .returning(Deployment.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if moved is None:
        status = session.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
        raise RuntimeError(f"deployment {deployment_id}: {status} cannot move to {to.value}")


# /metrics: how a deployment ended, as its action's outcome (compensated: refused after the platform call,
# which was undone).
DEPLOY_OUTCOMES = {
    DeploymentStatus.COMMITTED: "succeeded",
    DeploymentStatus.FAILED: "failed",
    DeploymentStatus.COMPENSATED: "refused",
}


def _finish(session: Session, row: Deployment, to: DeploymentStatus, status: int, body: dict[str, Any]) -> None:
    """`row` is locked by the caller's transaction (_lock_row): the move is checked on it and written
    with the answer in one UPDATE."""
    if to not in DEPLOYMENT_TRANSITIONS[DeploymentStatus(row.status)]:
        raise RuntimeError(f"deployment {row.id}: {row.status} cannot move to {to.value}")
    row.status = to.value
    row.response_status, row.response_body, row.finished_at = status, body, datetime.now(UTC)
    counters.count(session, "deploy_actions", {"action": row.action, "outcome": DEPLOY_OUTCOMES[to]})


def _check_unchanged(version: models.AutomationVersion, plan: Route, hints: Hints) -> None:
    check_hints(version, hints)
    if version.status != plan.current_status:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            f"the version moved to {version.status} while the request was handled",
            current_status=version.status,
        )


@dataclass(frozen=True)
class Committed:
    previous_live_id: str | None
    previous_workflow_id: str | None
    audit_id: int


def commit_live(
    session: Session,
    plan: Route,
    hints: Hints,
    actor: Actor,
    reason: str | None,
    invoked_via: str,
    project_live: bool,
    ops_email: str,
    slack: bool = False,
    notes: str | None = None,
    deployment_id: str | None = None,
) -> Committed:
    """Deploy, resume or rollback, after the platform activated the workflow: the version Live, the
    previous Live version Archived with its binding inactive, the project Live (by policy), audit and
    notifications."""
    project, version = _lock(session, plan)
    _check_unchanged(version, plan, hints)
    now = datetime.now(UTC)
    previous = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == plan.tenant_id,
            models.AutomationVersion.project_id == plan.project_id,
            models.AutomationVersion.status == Status.LIVE.value,
            models.AutomationVersion.id != plan.version_id,
        )
        .with_for_update()
    ).one_or_none()
    previous_binding = workflow_binding_of(session, previous) if previous is not None else None
    if previous is not None:
        lifecycle.transition(
            session,
            previous,
            Status.ARCHIVED,
            actor=actor,
            action="archive",
            reason=f"superseded by version {version.version_number}"
            + (" (rollback)" if plan.action == "rollback" else ""),
            metadata={"superseded_by": version.id, "deployment_id": deployment_id},
        )
        if previous_binding is not None:
            lifecycle.transition_binding(
                session, previous_binding, BindingStatus.INACTIVE, actor=actor, reason=f"version {previous.id} archived"
            )
        session.flush()  # the old Live row leaves the one-Live index before the new one enters it
    binding = workflow_binding_of(session, version)
    assert binding is not None
    lifecycle.transition_binding(
        session, binding, BindingStatus.ACTIVE, actor=actor, reason=f"version {version.id} live"
    )
    version.deployed_at, version.deployed_by, version.deployment_reason = now, actor.id, reason
    version.deployment_metadata = {
        "invoked_via": invoked_via,
        "workflow_id": binding.wrk_workflow_id,
        "action": plan.action,
        "deployment_id": deployment_id,
    }
    entry = lifecycle.transition(
        session,
        version,
        Status.LIVE,
        actor=actor,
        action=plan.action,
        reason=reason,
        metadata={
            "previous_live_version_id": previous.id if previous else None,
            "previous_live_status": Status.ARCHIVED.value if previous else None,
            "binding_id": binding.id,
            "previous_binding_id": previous_binding.id if previous_binding else None,
            "deployment_reason": reason,
            "notes": notes,
            "invoked_via": invoked_via,
            "deployment_id": deployment_id,
        },
    )
    if project_live and Status(project.status) is not Status.LIVE and lifecycle.allowed(project, Status.LIVE):
        lifecycle.transition(
            session,
            project,
            Status.LIVE,
            actor=actor,
            action=plan.action,
            reason=f"version {version.version_number} is live",
        )
    session.flush()
    _notify_live(session, project, version, actor, reason, ops_email, entry.id, slack, plan.action)
    history.record(
        session,
        project,
        version,
        action=plan.action,
        actor=actor,
        reason=reason,
        deployment_id=deployment_id,
        previous=previous,
        audit_id=entry.id,
    )
    return Committed(
        previous.id if previous else None, previous_binding.wrk_workflow_id if previous_binding else None, entry.id
    )


def commit_pause(
    session: Session,
    plan: Route,
    hints: Hints,
    actor: Actor,
    reason: str | None,
    notes: str | None,
    invoked_via: str,
    ops_email: str,
    deployment_id: str | None = None,
) -> int:
    """After the platform deactivated the workflow: the version Paused (binding stays the version's)."""
    project, version = _lock(session, plan)
    _check_unchanged(version, plan, hints)
    entry = lifecycle.transition(
        session,
        version,
        Status.PAUSED,
        actor=actor,
        action="pause",
        reason=reason,
        metadata={
            "invoked_via": invoked_via,
            "binding_id": plan.binding_id,
            "deployment_reason": reason,
            "notes": notes,
            "deployment_id": deployment_id,
        },
    )
    session.flush()
    # Paused: nothing is Live; the history's previous version is the one that was.
    history.record(
        session,
        project,
        version,
        action="pause",
        actor=actor,
        reason=reason,
        deployment_id=deployment_id,
        previous=version,
        audit_id=entry.id,
    )
    key = f"automation_paused:{entry.id}"
    notifications.notify_all(
        session,
        tenant_id=version.tenant_id,
        payload=_payload(project, version, actor, reason),
        messages=[
            (NotificationChannel.EMAIL, "automation_paused", ops_email, key),
            (NotificationChannel.EMAIL, "automation_paused", project.client_email, f"{key}:client"),
        ],
    )
    return entry.id


def _payload(
    project: models.Project, version: models.AutomationVersion, actor: Actor, reason: str | None
) -> dict[str, Any]:
    return {
        "project_name": project.name,
        "version_number": version.version_number,
        "automation_version_id": version.id,
        "actor": actor.id,
        "reason": reason or "-",
    }


# The deployment e-mail's words per action that makes a version Live (its subject, then its sentence).
LIVE_ACTION_WORDS: dict[str, tuple[str, str]] = {
    "deploy": ("Deployed", "deployed"),
    "resume": ("Resumed", "resumed"),
    "rollback": ("Rolled back", "rolled back to"),
}


def _notify_live(
    session: Session,
    project: models.Project,
    version: models.AutomationVersion,
    actor: Actor,
    reason: str | None,
    ops_email: str,
    audit_id: int,
    slack: bool,
    action: str,
) -> None:
    key = f"{version.id}:{audit_id}"
    collaborators = session.scalars(
        select(models.ProjectCollaborator.user_id).where(
            models.ProjectCollaborator.tenant_id == project.tenant_id,
            models.ProjectCollaborator.project_id == project.id,
        )
    ).all()
    messages: list[notifications.Message] = [
        (NotificationChannel.EMAIL, "automation_live", project.client_email, f"automation_live:{key}"),
        (NotificationChannel.EMAIL, "deployment_success", ops_email, f"deployment_success:{key}"),
        *(
            (NotificationChannel.IN_APP, "automation_live", user_id, f"automation_live_in_app:{key}:{user_id}")
            for user_id in collaborators
        ),
    ]
    if slack:
        messages.append((NotificationChannel.SLACK, "deployment_success", "slack", f"deployment_success_slack:{key}"))
    title, done = LIVE_ACTION_WORDS.get(action, LIVE_ACTION_WORDS["deploy"])
    payload = {**_payload(project, version, actor, reason), "action_title": title, "action_done": done}
    notifications.notify_all(session, tenant_id=version.tenant_id, payload=payload, messages=messages)


def live_versions(session: Session, tenant_id: str, project_id: str) -> list[str]:
    return list(
        session.scalars(
            select(models.AutomationVersion.id).where(
                models.AutomationVersion.tenant_id == tenant_id,
                models.AutomationVersion.project_id == project_id,
                models.AutomationVersion.status == Status.LIVE.value,
            )
        )
    )


def _alert(saga: Saga, tenant_id: str | None, summary: str, details: str, key: str) -> None:
    try:
        with transaction(saga.engine) as session:
            notifications.ops_alert(
                session,
                saga.ops_email,
                summary=summary,
                details=details,
                dedup_key=f"{key}:{hashlib.sha1(details.encode()).hexdigest()[:12]}",
                tenant_id=tenant_id,
            )
    except SQLAlchemyError:
        log.exception("could not record an ops alert: %s", summary)
