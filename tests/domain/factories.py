"""Rows for tests, made the way the code makes them (statuses through the lifecycle)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from domain import models
from domain.lifecycle import Actor, Status

TEST_ACTOR = Actor.system("tests")


def tenant(session: Session, name: str | None = None) -> models.Tenant:
    row = models.Tenant(name=name or f"tenant-{uuid.uuid4().hex[:8]}")
    session.add(row)
    session.flush()
    return row


def project(session: Session, tenant_id: str, name: str | None = None) -> models.Project:
    row = models.Project(tenant_id=tenant_id, name=name or f"project-{uuid.uuid4().hex[:8]}")
    session.add(row)
    session.flush()
    return row


def version(
    session: Session, project: models.Project, number: int = 1, status: Status | None = None
) -> models.AutomationVersion:
    row = models.AutomationVersion(
        tenant_id=project.tenant_id, project_id=project.id, version_number=number, blueprint={"steps": []}
    )
    session.add(row)
    session.flush()
    if status is not None and status is not Status.DRAFT:
        put_in_status(session, row, status)
    return row


def put_in_status(session: Session, entity: models.AutomationVersion | models.Project, status: Status) -> None:
    """Test set-up only: place a row in a status without walking a path (no audit row)."""
    models.allow_status_write(entity, status)
    entity.status = status.value
    session.flush()


def workflow_execution(session: Session, tenant_id: str) -> models.WorkflowExecution:
    """A queued execution of a one-step workflow: a row to hang approvals on."""
    workflow = models.Workflow(tenant_id=tenant_id, name=f"wf-{uuid.uuid4().hex[:8]}")
    session.add(workflow)
    session.flush()
    definition = models.WorkflowDefinition(tenant_id=tenant_id, workflow_id=workflow.id, name=workflow.name)
    session.add(definition)
    session.flush()
    row = models.WorkflowExecution(
        tenant_id=tenant_id, workflow_definition_id=definition.id, workflow_id=workflow.id, version=1
    )
    session.add(row)
    session.flush()
    return row


def build_trigger(session: Session, tenant_id: str, built: bool = True) -> dict[str, str]:
    """A build trigger's payload naming real rows: with `built`, its outcome is recorded (the version in
    QA & Testing, its binding holding the platform's workflow); without, the version still waits for it."""
    version_row = version(session, project(session, tenant_id), status=Status.BUILD_IN_PROGRESS)
    binding = models.WorkflowBinding(tenant_id=tenant_id, automation_version_id=version_row.id)
    session.add(binding)
    session.flush()
    if built:
        put_in_status(session, version_row, Status.QA_AND_TESTING)
        binding.wrk_workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
        session.flush()
    return {
        "tenant_id": tenant_id,
        "project_id": version_row.project_id,
        "automation_version_id": version_row.id,
        "workflow_binding_id": binding.id,
    }
