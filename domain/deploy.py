"""Flow 24 / 24B, the deploy rules: route a status request, check preconditions, and commit a deploy,
a resume or a pause in one transaction. Never two Live versions of a project (the partial unique
index is the last word); deploys of one project are serialised by locking the project row.

The platform calls (activate, deactivate) happen outside these transactions, in the caller: activation
before `commit_live`, deactivation of the previous version after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import lifecycle, models, notifications
from domain.automation_versions import workflow_binding_of
from domain.lifecycle import Actor, Status
from domain.models import BindingStatus, NotificationChannel

DEPLOYABLE_BINDING = (BindingStatus.ACTIVE.value, BindingStatus.INACTIVE.value)


class DeployRefused(Exception):
    """A request the rules refuse; `code` is the API's problem code."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


@dataclass(frozen=True)
class Route:
    action: str  # deploy | resume | pause | noop
    version_id: str
    tenant_id: str
    project_id: str
    current_status: str
    workflow_id: str | None
    binding_id: str | None


@dataclass(frozen=True)
class Hints:
    last_known_status: str | None = None
    last_known_updated_at: datetime | None = None


def route(session: Session, version: models.AutomationVersion, requested: str) -> Route:
    """Which flow a requested status means for the version's current status."""
    current = Status(version.status)
    binding = workflow_binding_of(session, version)
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
    if action in ("deploy", "resume") and (
        binding is None or not binding.wrk_workflow_id or binding.status not in DEPLOYABLE_BINDING
    ):
        raise DeployRefused(
            409,
            "precondition_failed",
            f"automation version {version.id} has no deployable workflow binding",
            binding_status=None if binding is None else binding.status,
        )
    return Route(
        action,
        version.id,
        version.tenant_id,
        version.project_id,
        current.value,
        binding.wrk_workflow_id if binding else None,
        binding.id if binding else None,
    )


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


def _check_unchanged(version: models.AutomationVersion, plan: Route, hints: Hints) -> None:
    check_hints(version, hints)
    if version.status != plan.current_status:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            f"the version moved to {version.status!r} while the request was handled",
            current_status=version.status,
        )


def check_hints(version: models.AutomationVersion, hints: Hints) -> None:
    """The client's view of the version (status, updated_at) must still be true."""
    if hints.last_known_status is not None and hints.last_known_status != version.status:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            f"the version is {version.status!r}, not {hints.last_known_status!r} as last known",
            current_status=version.status,
        )
    if hints.last_known_updated_at is not None and hints.last_known_updated_at != version.updated_at:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            "the version changed since it was last read",
            current_status=version.status,
            updated_at=version.updated_at.isoformat(),
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
) -> Committed:
    """Deploy or resume, after the platform activated the workflow: the version Live, the previous Live
    version Archived with its binding inactive, the project Live (by policy), audit and notifications."""
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
            reason=f"superseded by version {version.version_number}",
            metadata={"superseded_by": version.id},
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
            "invoked_via": invoked_via,
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
    _notify_live(session, project, version, actor, reason, ops_email, entry.id, slack)
    return Committed(
        previous.id if previous else None, previous_binding.wrk_workflow_id if previous_binding else None, entry.id
    )


def commit_pause(
    session: Session, plan: Route, hints: Hints, actor: Actor, reason: str | None, invoked_via: str, ops_email: str
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
        metadata={"invoked_via": invoked_via, "binding_id": plan.binding_id},
    )
    session.flush()
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


def _notify_live(
    session: Session,
    project: models.Project,
    version: models.AutomationVersion,
    actor: Actor,
    reason: str | None,
    ops_email: str,
    audit_id: int,
    slack: bool,
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
    notifications.notify_all(
        session, tenant_id=version.tenant_id, payload=_payload(project, version, actor, reason), messages=messages
    )


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
