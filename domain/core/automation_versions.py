"""Reading automation versions the way a client follows them: status, binding, latest audit entries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.core import models


def find_version(
    session: Session, tenant_ids: Iterable[str], version_id: str, for_update: bool = False
) -> models.AutomationVersion | None:
    """A version by id, only within the given tenants (another tenant's version is not found)."""
    query = select(models.AutomationVersion).where(
        models.AutomationVersion.id == version_id,
        models.AutomationVersion.tenant_id.in_(list(tenant_ids)),
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def workflow_binding_of(session: Session, version: models.AutomationVersion) -> models.WorkflowBinding | None:
    """The version's workflow binding (one per version), within the version's own tenant."""
    return session.scalars(
        select(models.WorkflowBinding).where(
            models.WorkflowBinding.tenant_id == version.tenant_id,
            models.WorkflowBinding.automation_version_id == version.id,
        )
    ).one_or_none()


def version_detail(session: Session, version: models.AutomationVersion, audit_limit: int = 20) -> dict[str, Any]:
    # By primary key: no round trip when the session already holds the project (a deploy's commit does).
    project = session.get(models.Project, version.project_id)
    assert project is not None and project.tenant_id == version.tenant_id  # the (tenant, project) foreign key
    binding = workflow_binding_of(session, version)
    audit = session.scalars(
        select(models.AuditLog)
        .where(
            models.AuditLog.tenant_id == version.tenant_id,
            models.AuditLog.entity_type == "automation_versions",
            models.AuditLog.entity_id == version.id,
        )
        .order_by(models.AuditLog.id.desc())
        .limit(audit_limit)
    ).all()
    return {
        "id": version.id,
        "tenant_id": version.tenant_id,
        "project": {"id": project.id, "name": project.name, "status": project.status},
        "version_number": version.version_number,
        "status": version.status,
        "status_changed_at": version.status_changed_at,
        "updated_at": version.updated_at,
        "deployed_at": version.deployed_at,
        "deployed_by": version.deployed_by,
        "deployment_reason": version.deployment_reason,
        "workflow_binding": None
        if binding is None
        else {
            "id": binding.id,
            "status": binding.status,
            "wrk_workflow_id": binding.wrk_workflow_id,
            "wrk_workflow_url": binding.wrk_workflow_url,
            "error": binding.error,
        },
        "audit": [
            {
                "id": a.id,
                "action": a.action,
                "actor_type": a.actor_type,
                "actor_id": a.actor_id,
                "previous_status": a.previous_status,
                "new_status": a.new_status,
                "reason": a.reason,
                "metadata": a.details,
                "created_at": a.created_at,
            }
            for a in audit
        ],
    }
