"""Flow 22, the build worker's rules: which versions can be built, what a build request carries, what
the job re-reads from the store, and what a finished or rejected build writes.

The tenant in a build trigger is a hint: every row is re-selected by `(tenant_id, id)`, and a row that
exists under another tenant is a tenant mismatch, never a row to act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain import lifecycle, models, notifications, queue
from domain.automation_versions import workflow_binding_of
from domain.lifecycle import Actor, Status
from domain.models import BindingStatus, NotificationChannel, TaskStatus
from domain.triggers import BuildTrigger

BUILD_ACTOR = Actor.system("build_worker")
BUILDABLE = (Status.DRAFT, Status.ERROR)
# A project moves to QA & Testing with its version only from these; a Live or Paused project keeps its
# status while a new version is tested.
PROJECT_FOLLOWS_BUILD = (Status.DRAFT, Status.BUILD_IN_PROGRESS, Status.ERROR)


class BuildRejected(Exception):
    """A build that must stop without (further) platform calls; retrying cannot help."""

    def __init__(self, reason: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.reason, self.details = reason, details


@dataclass(frozen=True)
class BuildTarget:
    tenant_id: str
    project_id: str
    project_name: str
    project_status: str
    owner_user_id: str | None
    client_email: str | None
    automation_version_id: str
    version_number: int
    version_status: str
    workflow_binding_id: str
    blueprint: dict[str, Any] = field(repr=False)
    wrk_workflow_id: str | None
    wrk_workflow_url: str | None

    @property
    def workflow_name(self) -> str:
        return f"{self.project_name} v{self.version_number}"

    @property
    def already_built(self) -> bool:
        return self.version_status == Status.QA_AND_TESTING.value and self.wrk_workflow_id is not None


# -- the request (API side) ----------------------------------------------------------------------------


def request_build(session: Session, version: models.AutomationVersion, actor: Actor) -> int:
    """Move a buildable version to Build in Progress and enqueue its build trigger, in one transaction.
    A version already in Build in Progress gets its pending trigger back (dedup by version)."""
    status = Status(version.status)
    if status in BUILDABLE:
        lifecycle.transition(
            session, version, Status.BUILD_IN_PROGRESS, actor=actor, action="build_requested", reason="build requested"
        )
    elif status is not Status.BUILD_IN_PROGRESS:
        raise lifecycle.InvalidStatusTransition("automation_versions", version.id, status, Status.BUILD_IN_PROGRESS)
    binding = workflow_binding_of(session, version)
    if binding is None:
        binding = models.WorkflowBinding(tenant_id=version.tenant_id, automation_version_id=version.id)
        session.add(binding)
        session.flush()
    elif binding.status == BindingStatus.ERROR.value:
        binding.status, binding.error = BindingStatus.PENDING.value, None
    payload = BuildTrigger(
        tenant_id=version.tenant_id,
        project_id=version.project_id,
        automation_version_id=version.id,
        workflow_binding_id=binding.id,
    )
    return queue.enqueue(session, "build", version.tenant_id, payload.model_dump(), dedup_key=f"build:{version.id}")


# -- the job's steps -----------------------------------------------------------------------------------


def load_target(session: Session, trigger: BuildTrigger) -> BuildTarget:
    """Re-select version, project and binding by (tenant, ids); the store, not the message, decides."""
    version = session.get(models.AutomationVersion, trigger.automation_version_id)
    if version is None:
        raise BuildRejected("lookup_failed", f"automation version {trigger.automation_version_id} not found")
    if version.tenant_id != trigger.tenant_id:
        raise BuildRejected(
            "tenant_mismatch", f"automation version {version.id} does not belong to tenant {trigger.tenant_id}"
        )
    tenant = trigger.tenant_id
    project = session.scalars(
        select(models.Project).where(models.Project.tenant_id == tenant, models.Project.id == trigger.project_id)
    ).one_or_none()
    binding = session.scalars(
        select(models.WorkflowBinding).where(
            models.WorkflowBinding.tenant_id == tenant,
            models.WorkflowBinding.id == trigger.workflow_binding_id,
        )
    ).one_or_none()
    if project is None or version.project_id != project.id:
        raise BuildRejected("lookup_failed", f"project {trigger.project_id} of version {version.id} not found")
    if binding is None or binding.automation_version_id != version.id:
        raise BuildRejected(
            "lookup_failed", f"workflow binding {trigger.workflow_binding_id} of version {version.id} not found"
        )
    target = BuildTarget(
        tenant_id=tenant,
        project_id=project.id,
        project_name=project.name,
        project_status=project.status,
        owner_user_id=project.owner_user_id,
        client_email=project.client_email,
        automation_version_id=version.id,
        version_number=version.version_number,
        version_status=version.status,
        workflow_binding_id=binding.id,
        blueprint=dict(version.blueprint or {}),
        wrk_workflow_id=binding.wrk_workflow_id,
        wrk_workflow_url=binding.wrk_workflow_url,
    )
    if version.status != Status.BUILD_IN_PROGRESS.value and not target.already_built:
        raise BuildRejected("not_buildable", f"automation version {version.id} is {version.status!r}")
    return target


def blueprint_errors(blueprint: Any) -> list[dict[str, str]]:
    """The structure the platform needs, checked before calling it: a non-empty list of steps, each an
    object with a string `id` and `type`."""
    steps = blueprint.get("steps") if isinstance(blueprint, dict) else None
    if not isinstance(steps, list) or not steps:
        return [{"path": "blueprint.steps", "message": "must be a non-empty list"}]
    errors = []
    for i, step in enumerate(steps):
        for key in ("id", "type"):
            if not isinstance(step, dict) or not isinstance(step.get(key), str) or not step.get(key):
                errors.append({"path": f"blueprint.steps[{i}].{key}", "message": "required"})
    return errors


def reject(
    session: Session, trigger: BuildTrigger, rejected: BuildRejected, ops_email: str, run_id: str | None = None
) -> None:
    """Binding `error`, version `Error` (from Build in Progress), an audit row, and one ops alert. Only
    rows of the version's own tenant are touched."""
    version = session.get(models.AutomationVersion, trigger.automation_version_id)
    tenant = version.tenant_id if version is not None else trigger.tenant_id
    error = {"reason": rejected.reason, "message": str(rejected), "details": rejected.details, "run_id": run_id}
    session.execute(
        update(models.WorkflowBinding)
        .where(models.WorkflowBinding.tenant_id == tenant, models.WorkflowBinding.id == trigger.workflow_binding_id)
        .values(status=BindingStatus.ERROR.value, error=error, updated_at=datetime.now(UTC))
    )
    if version is not None and version.tenant_id == trigger.tenant_id:
        if version.status == Status.BUILD_IN_PROGRESS.value:
            lifecycle.transition(
                session,
                version,
                Status.ERROR,
                actor=BUILD_ACTOR,
                action="build_failed",
                reason=str(rejected),
                metadata=error,
            )
        else:
            lifecycle.record(
                session,
                tenant_id=tenant,
                entity_type="automation_versions",
                entity_id=version.id,
                action="build_failed",
                actor=BUILD_ACTOR,
                reason=str(rejected),
                metadata=error,
            )
    notifications.ops_alert(
        session,
        ops_email,
        tenant_id=tenant if version is not None else None,
        summary=f"Build of automation version {trigger.automation_version_id} failed: {rejected.reason}",
        details=f"{rejected}\nDetails: {rejected.details}\nBinding: {trigger.workflow_binding_id}\nRun: {run_id}",
        dedup_key=f"build_failed:{trigger.workflow_binding_id}:{run_id}",
    )


def record_build(session: Session, target: BuildTarget, workflow_id: str, workflow_url: str) -> bool:
    """One transaction: binding active with the workflow; version, then project, to QA & Testing; the
    integration tasks complete; the `build_complete` audit row. False if it was already recorded."""
    version = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == target.tenant_id,
            models.AutomationVersion.id == target.automation_version_id,
        )
        .with_for_update()
    ).one()
    if version.status == Status.QA_AND_TESTING.value:
        return False
    now = datetime.now(UTC)
    session.execute(
        update(models.WorkflowBinding)
        .where(
            models.WorkflowBinding.tenant_id == target.tenant_id,
            models.WorkflowBinding.id == target.workflow_binding_id,
        )
        .values(
            wrk_workflow_id=workflow_id,
            wrk_workflow_url=workflow_url,
            status=BindingStatus.ACTIVE.value,
            error=None,
            updated_at=now,
        )
    )
    lifecycle.transition(session, version, Status.QA_AND_TESTING, actor=BUILD_ACTOR, reason="build complete")
    project = session.scalars(
        select(models.Project).where(
            models.Project.tenant_id == target.tenant_id, models.Project.id == target.project_id
        )
    ).one()
    if Status(project.status) in PROJECT_FOLLOWS_BUILD:
        lifecycle.transition(
            session, project, Status.QA_AND_TESTING, actor=BUILD_ACTOR, reason=f"version {target.version_number} built"
        )
    session.execute(
        update(models.Task)
        .where(
            models.Task.tenant_id == target.tenant_id,
            models.Task.automation_version_id == target.automation_version_id,
            models.Task.kind == "integration",
            models.Task.status != TaskStatus.COMPLETE.value,
        )
        .values(status=TaskStatus.COMPLETE.value, completed_at=now)
    )
    lifecycle.record(
        session,
        tenant_id=target.tenant_id,
        entity_type="automation_versions",
        entity_id=target.automation_version_id,
        action="build_complete",
        actor=BUILD_ACTOR,
        metadata={"workflow_id": workflow_id, "workflow_url": workflow_url},
    )
    return True


def notify_build(session: Session, target: BuildTarget, workflow_id: str, workflow_url: str, ops_email: str) -> int:
    """E-mail `build_complete` to the client and `qa_ready` to ops; in-app to the project owner."""
    payload = {
        "project_name": target.project_name,
        "version_number": target.version_number,
        "automation_version_id": target.automation_version_id,
        "workflow_url": workflow_url,
        "workflow_id": workflow_id,
    }
    key = f"{target.automation_version_id}:{workflow_id}"
    return notifications.notify_all(
        session,
        tenant_id=target.tenant_id,
        payload=payload,
        messages=[
            (NotificationChannel.EMAIL, "build_complete", target.client_email, f"build_complete:{key}"),
            (NotificationChannel.EMAIL, "qa_ready", ops_email, f"qa_ready:{key}"),
            (NotificationChannel.IN_APP, "qa_ready", target.owner_user_id, f"qa_ready_in_app:{key}"),
        ],
    )
