"""Tenants and people, projects, automation versions, workflow bindings, deployments and tasks."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.models.base import (
    Base,
    created_column,
    id_column,
    one_of,
    status_check,
    utcnow,
)
from domain.core.statuses import INITIAL_STATUS, BindingStatus, Status


class DeploymentStatus(enum.StrEnum):
    """A deploy, resume, pause or rollback, recorded before the platform is called (domain.deploy)."""

    REQUESTED = "requested"  # recorded; the platform not called yet
    ACTIVATING = "activating"  # the platform is being changed; the store not yet
    COMMITTED = "committed"  # the store follows the platform
    COMPENSATED = "compensated"  # refused after the platform changed; the platform was put back
    FAILED = "failed"  # the platform call failed or never happened; the platform is as it was


DEPLOYMENT_ACTIONS = ("deploy", "resume", "pause", "rollback")


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    BLOCKED = "blocked"
    COMPLETE = "complete"


# ---------------------------------------------------------------------------------------------------
# Tenants and people


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = created_column()


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = id_column()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()


class TenantMembership(Base):
    """A user's roles in one tenant (ops staff may be members of, or delegated to, several)."""

    __tablename__ = "tenant_memberships"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    roles: Mapped[list[Any]] = mapped_column(default=list)
    delegated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = created_column()


# ---------------------------------------------------------------------------------------------------
# Projects, automation versions and what hangs off them


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("tenant_id", "name"),
        status_check("status", list(Status)),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default=INITIAL_STATUS.value)
    owner_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    client_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = created_column()
    status_changed_at: Mapped[datetime] = created_column()


class ProjectCollaborator(Base):
    __tablename__ = "project_collaborators"
    __table_args__ = (ForeignKeyConstraint(["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"]),)
    tenant_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)


class AutomationVersion(Base):
    __tablename__ = "automation_versions"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"]),
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("project_id", "version_number"),
        status_check("status", list(Status)),
        CheckConstraint("version_number > 0", name="version_number_positive"),
        # The promise of Flow 24: never two Live versions of one project, enforced by the database.
        Index(
            "uq_automation_versions_one_live",
            "tenant_id",
            "project_id",
            unique=True,
            sqlite_where=text("status = 'Live'"),
            postgresql_where=text("status = 'Live'"),
        ),
        Index("ix_automation_versions_tenant_id_project_id", "tenant_id", "project_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36))
    version_number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default=INITIAL_STATUS.value)
    blueprint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    status_changed_at: Mapped[datetime] = created_column()
    deployed_at: Mapped[datetime | None] = mapped_column()
    deployed_by: Mapped[str | None] = mapped_column(String(200))
    deployment_reason: Mapped[str | None] = mapped_column(Text)
    deployment_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WorkflowBinding(Base):
    """The link between an automation version and its workflow on the WRK Platform."""

    __tablename__ = "workflow_bindings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
        ),
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("automation_version_id"),
        status_check("status", list(BindingStatus)),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    automation_version_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16), default=BindingStatus.PENDING.value)
    wrk_workflow_id: Mapped[str | None] = mapped_column(String(200))
    wrk_workflow_url: Mapped[str | None] = mapped_column(String(1000))
    error: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Deployment(Base):
    """The intent of one status change that calls the WRK Platform, written before the call, so a crash
    between the call and the commit is found and finished or undone by reconciliation."""

    __tablename__ = "deployments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
        ),
        # One request per key and tenant (NULL keys are distinct on both backends).
        UniqueConstraint("tenant_id", "idempotency_key"),
        status_check("status", list(DeploymentStatus)),
        status_check("action", DEPLOYMENT_ACTIONS, name="action_valid"),
        CheckConstraint(one_of("actor_type", ["user", "system"]), name="actor_type_valid"),
        Index(
            "ix_deployments_open",
            "deadline_at",
            sqlite_where=text("status IN ('requested', 'activating')"),
            postgresql_where=text("status IN ('requested', 'activating')"),
        ),
        Index("ix_deployments_tenant_id_automation_version_id", "tenant_id", "automation_version_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(36))
    automation_version_id: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=DeploymentStatus.REQUESTED.value)
    from_status: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str | None] = mapped_column(String(200))
    previous_live_version_id: Mapped[str | None] = mapped_column(String(36))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    invoked_via: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[dict[str, Any] | None] = mapped_column()
    deadline_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
        ),
        status_check("status", list(TaskStatus)),
        Index("ix_tasks_tenant_id_automation_version_id", "tenant_id", "automation_version_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    automation_version_id: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(64))  # "integration", "review", ...
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING.value)
    created_at: Mapped[datetime] = created_column()
    completed_at: Mapped[datetime | None] = mapped_column()
