"""Flow 22, the build worker's rules: which versions can be built, what a build request carries, what
the job re-reads from the store, and what a finished or rejected build writes.

The tenant in a build trigger is a hint: every row is re-selected by `(tenant_id, id)`, and a row that
exists under another tenant is a tenant mismatch, never a row to act on.

A build run acts only on a version in `Build in Progress`, or on an errored build (version `Error`, binding
`error`), which it resumes with the same binding, so the same workflow. A run for a version anywhere else
(a stale re-execution, a duplicate run) changes nothing and says why (`stale_reason`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.core import counters, lifecycle, models, notifications
from domain.core.automation_versions import workflow_binding_of
from domain.core.lifecycle import Actor, BindingStatus, Status
from domain.core.models import NotificationChannel, TaskStatus
from domain.queue import queue
from domain.queue.triggers import BuildTrigger

BUILD_ACTOR = Actor.system("build_worker")
BUILDABLE = (Status.DRAFT, Status.ERROR)
# A project moves to QA & Testing with its version only from these; a Live or Paused project keeps its
# status while a new version is tested.
PROJECT_FOLLOWS_BUILD = (Status.DRAFT, Status.BUILD_IN_PROGRESS, Status.ERROR)


class LaunchRefused(Exception):
    """A launch from the Dagster UI that cannot start a build; nothing was written."""


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
    binding_status: str
    blueprint: dict[str, Any] = field(repr=False)
    wrk_workflow_id: str | None
    wrk_workflow_url: str | None

    @property
    def workflow_name(self) -> str:
        return f"{self.project_name} v{self.version_number}"

    @property
    def already_built(self) -> bool:
        return self.version_status == Status.QA_AND_TESTING.value and self.wrk_workflow_id is not None

    @property
    def errored(self) -> bool:
        """A build that was rejected (version Error, binding error): a re-execution resumes it."""
        return self.version_status == Status.ERROR.value and self.binding_status == BindingStatus.ERROR.value

    @property
    def trigger(self) -> BuildTrigger:
        return BuildTrigger(
            tenant_id=self.tenant_id,
            project_id=self.project_id,
            automation_version_id=self.automation_version_id,
            workflow_binding_id=self.workflow_binding_id,
        )


def stale_reason(target: BuildTarget) -> str | None:
    """Why a build run must leave this version alone, or None when it goes on. A version in QA & Testing
    with its workflow is already built: the run goes on without a platform call, and `record` and
    `notify` do nothing twice (this finishes a build whose run died after recording)."""
    if target.version_status == Status.BUILD_IN_PROGRESS.value or target.already_built or target.errored:
        return None
    return (
        f"automation version {target.automation_version_id} is {target.version_status} (binding "
        f"{target.binding_status}): a build run changes nothing outside Build in Progress"
    )


# -- the request (API side) ----------------------------------------------------------------------------


def begin_build(
    session: Session, version: models.AutomationVersion, actor: Actor, *, reason: str = "build requested"
) -> models.WorkflowBinding:
    """What every build request does, from the API or from the Dagster UI: a Draft or Error version
    moves to Build in Progress (audited `build_requested`), and gets its binding (created `pending`, or
    an `error` one back to `pending`). A version already in Build in Progress keeps its binding."""
    status = Status(version.status)
    if status in BUILDABLE:
        lifecycle.transition(
            session, version, Status.BUILD_IN_PROGRESS, actor=actor, action="build_requested", reason=reason
        )
        counters.count(session, "builds", {"outcome": "requested"})
    elif status is not Status.BUILD_IN_PROGRESS:
        raise lifecycle.InvalidStatusTransition("automation_versions", version.id, status, Status.BUILD_IN_PROGRESS)
    binding = workflow_binding_of(session, version)
    if binding is None:
        binding = models.WorkflowBinding(tenant_id=version.tenant_id, automation_version_id=version.id)
        session.add(binding)
        session.flush()
    elif binding.status == BindingStatus.ERROR.value:
        lifecycle.transition_binding(session, binding, BindingStatus.PENDING, actor=actor, reason=reason)
        binding.error = None
    return binding


def request_build(session: Session, version: models.AutomationVersion, actor: Actor) -> int:
    """Begin the build and enqueue its trigger, in one transaction. A version already in Build in
    Progress gets its pending trigger back (dedup by version)."""
    binding = begin_build(session, version, actor)
    payload = BuildTrigger(
        tenant_id=version.tenant_id,
        project_id=version.project_id,
        automation_version_id=version.id,
        workflow_binding_id=binding.id,
    )
    return queue.enqueue(session, "build", version.tenant_id, payload.model_dump(), dedup_key=f"build:{version.id}")


def launch(session: Session, automation_version_id: str, tenant_hint: str | None, actor: Actor) -> BuildTrigger:
    """A build launched from the Dagster UI with only the version id: the request's `begin_build`, with
    the run itself as the build (no queue row). Refused before any write when the version is missing, not
    in the hinted tenant, or not buildable."""
    version = session.get(models.AutomationVersion, automation_version_id, with_for_update=True)
    if version is None or (tenant_hint and version.tenant_id != tenant_hint):
        where = f" in tenant {tenant_hint}" if tenant_hint else ""
        raise LaunchRefused(f"automation version {automation_version_id} not found{where}")
    try:
        binding = begin_build(session, version, actor, reason="build launched from Dagster")
    except lifecycle.InvalidStatusTransition as exc:
        raise LaunchRefused(
            f"automation version {version.id} is {version.status}: only a Draft or Error version can be built "
            "(one in Build in Progress is built again); nothing was changed"
        ) from exc
    return BuildTrigger(
        tenant_id=version.tenant_id,
        project_id=version.project_id,
        automation_version_id=version.id,
        workflow_binding_id=binding.id,
    )


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
        binding_status=binding.status,
        blueprint=dict(version.blueprint or {}),
        wrk_workflow_id=binding.wrk_workflow_id,
        wrk_workflow_url=binding.wrk_workflow_url,
    )
    return target


def prepare(session: Session, trigger: BuildTrigger, run_id: str | None = None) -> tuple[BuildTarget, str | None]:
    """Just before the platform call: the target re-read with the version locked, and why to leave it
    alone (None: build). An errored build is resumed here, audited: version Error -> Build in Progress,
    binding error -> pending. The binding, hence the platform's idempotency key, stays the same, so a
    re-execution from failure completes the build with one workflow."""
    session.get(models.AutomationVersion, trigger.automation_version_id, with_for_update=True)
    target = load_target(session, trigger)
    reason = stale_reason(target)
    resumable = target.version_status in (Status.ERROR.value, Status.BUILD_IN_PROGRESS.value)
    if reason is None and resumable and target.binding_status == BindingStatus.ERROR.value:
        version = session.get(models.AutomationVersion, trigger.automation_version_id)
        binding = session.get(models.WorkflowBinding, trigger.workflow_binding_id)
        assert version is not None and binding is not None  # load_target found both
        note = f"build resumed by run {run_id}"
        if version.status == Status.ERROR.value:
            lifecycle.transition(
                session,
                version,
                Status.BUILD_IN_PROGRESS,
                actor=BUILD_ACTOR,
                action="build_resumed",
                reason=note,
                metadata={"run_id": run_id, "previous_error": binding.error},
            )
        lifecycle.transition_binding(session, binding, BindingStatus.PENDING, actor=BUILD_ACTOR, reason=note)
        binding.error = None
        session.flush()
        target = load_target(session, trigger)
    return target, reason


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
    binding = session.scalars(
        select(models.WorkflowBinding).where(
            models.WorkflowBinding.tenant_id == tenant, models.WorkflowBinding.id == trigger.workflow_binding_id
        )
    ).one_or_none()
    # Only a binding still waiting for its workflow (or already in error) records the failure: an
    # active or inactive one belongs to a built version that this run must not break.
    if binding is not None and binding.status in (BindingStatus.PENDING.value, BindingStatus.ERROR.value):
        lifecycle.transition_binding(
            session, binding, BindingStatus.ERROR, actor=BUILD_ACTOR, action="build_failed", reason=str(rejected)
        )
        binding.error = error
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
            count_outcome(session, version, "failed")
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


def count_outcome(session: Session, version: models.AutomationVersion, outcome: str) -> None:
    """/metrics: a build's outcome, and its time from the version's latest build request (its audit row)."""
    counters.count(session, "builds", {"outcome": outcome})
    requested = session.scalar(
        select(models.AuditLog.created_at)
        .where(
            models.AuditLog.entity_type == "automation_versions",
            models.AuditLog.entity_id == version.id,
            models.AuditLog.action == "build_requested",
        )
        .order_by(models.AuditLog.created_at.desc())
        .limit(1)
    )
    if requested is not None:
        seconds = (datetime.now(UTC) - requested.replace(tzinfo=requested.tzinfo or UTC)).total_seconds()
        counters.observe(session, "build_duration_seconds", seconds)


RECORDED, ALREADY_RECORDED = "recorded", "already_recorded"


def record_build(session: Session, target: BuildTarget, workflow_id: str, workflow_url: str) -> str:
    """One transaction: binding active with the workflow; version, then project, to QA & Testing; the
    integration tasks complete; the `build_complete` audit row. Returns RECORDED, ALREADY_RECORDED, or
    the reason it left a version that is no longer in Build in Progress alone."""
    version = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == target.tenant_id,
            models.AutomationVersion.id == target.automation_version_id,
        )
        .with_for_update()
    ).one()
    binding = session.scalars(
        select(models.WorkflowBinding).where(
            models.WorkflowBinding.tenant_id == target.tenant_id,
            models.WorkflowBinding.id == target.workflow_binding_id,
        )
    ).one()
    if version.status == Status.QA_AND_TESTING.value and binding.wrk_workflow_id == workflow_id:
        return ALREADY_RECORDED
    if version.status != Status.BUILD_IN_PROGRESS.value:
        return (
            f"automation version {version.id} is {version.status} (binding {binding.status}): "
            f"workflow {workflow_id} not recorded"
        )
    now = datetime.now(UTC)
    binding.wrk_workflow_id, binding.wrk_workflow_url, binding.error = workflow_id, workflow_url, None
    lifecycle.transition_binding(
        session,
        binding,
        BindingStatus.ACTIVE,
        actor=BUILD_ACTOR,
        reason="build complete",
        metadata={"workflow_id": workflow_id},
    )
    lifecycle.transition(session, version, Status.QA_AND_TESTING, actor=BUILD_ACTOR, reason="build complete")
    count_outcome(session, version, "succeeded")
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
    return RECORDED


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
