"""The store: every table of the five flows, with their invariants as database constraints.

Every table that holds tenant data carries `tenant_id`; rows that belong to a tenant-scoped parent
reference it through a composite foreign key `(tenant_id, parent_id)`, so a row can never point at
another tenant's parent, whatever the code does.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from domain.lifecycle import INITIAL_STATUS, Status
from domain.lifecycle import BindingStatus as BindingStatus  # re-exported: the lifecycle owns it

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def one_of(column: str, values: Any) -> str:
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


def id_column() -> Mapped[str]:
    return mapped_column(String(36), primary_key=True, default=new_id)


def created_column() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


# ---------------------------------------------------------------------------------------------------
# Status value sets of the tables the lifecycle does not own. Each set lives once, here. (The workflow
# bindings' statuses, `BindingStatus`, live with their moves in domain.lifecycle.)


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


class NotificationChannel(enum.StrEnum):
    EMAIL = "email"
    IN_APP = "in_app"
    SLACK = "slack"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class QueueState(enum.StrEnum):
    """States of a trigger_queue row; the moves between them are written down in domain.queue."""

    AVAILABLE = "available"
    CLAIMED = "claimed"
    LAUNCHED = "launched"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"


QUEUE_LIVE_STATES = (QueueState.AVAILABLE, QueueState.CLAIMED, QueueState.LAUNCHED)


class BuildStatus(enum.StrEnum):
    """Release builds and their per-repository builds."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not built because a dependency failed


class ExecutionStatus(enum.StrEnum):
    """A workflow execution; the moves between them are written down in domain.workflow_states."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class StepStatus(enum.StrEnum):
    """One step of one execution (domain.workflow_states)."""

    PENDING = "pending"
    RUNNING = "running"  # its service call was (or is being) made: the intent is recorded
    WAITING = "waiting"  # an approval is open
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # an approval said no (with on_reject=continue the workflow goes on)
    SKIPPED = "skipped"  # never started: the execution ended first
    CANCELLED = "cancelled"


STEP_KINDS = ("service_call", "approval", "publish")


class ApprovalStatus(enum.StrEnum):
    """A human approval (domain.approvals owns the moves): pending -> approved | rejected | expired |
    cancelled, never back."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # timed out: `outcome` is the on_timeout that was applied
    CANCELLED = "cancelled"  # its execution was cancelled


APPROVAL_OUTCOMES = ("approve", "reject", "fail")
APPROVAL_ON_REJECT = ("stop", "continue")


class CallbackStatus(enum.StrEnum):
    """A standalone approval's callback: pending -> delivered | dead, never back."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class PhaseStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def status_check(column: str, values: Any, name: str | None = None) -> CheckConstraint:
    return CheckConstraint(one_of(column, values), name=name or f"{column}_valid")


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


# ---------------------------------------------------------------------------------------------------
# Audit and notifications


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        CheckConstraint(one_of("actor_type", ["user", "system"]), name="actor_type_valid"),
        Index("ix_audit_logs_entity", "entity_type", "entity_id", "created_at"),
        Index("ix_audit_logs_tenant_id_created_at", "tenant_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Null only for platform-wide events (release builds, queue operations on tenant-less triggers).
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(200))
    previous_status: Mapped[str | None] = mapped_column(String(32))
    new_status: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[datetime] = created_column()


class Notification(Base):
    """The outbox: flows add rows in their own transaction; a job delivers them at least once."""

    __tablename__ = "notifications"
    __table_args__ = (
        status_check("channel", list(NotificationChannel)),
        status_check("status", list(NotificationStatus)),
        Index(
            "ix_notifications_pending",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_notifications_tenant_id_recipient", "tenant_id", "recipient"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    channel: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedup_key: Mapped[str] = mapped_column(String(300), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = created_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    read_at: Mapped[datetime | None] = mapped_column()


# ---------------------------------------------------------------------------------------------------
# The trigger queue


class TriggerQueue(Base):
    __tablename__ = "trigger_queue"
    __table_args__ = (
        status_check("state", list(QueueState)),
        CheckConstraint("attempts >= 0 AND max_attempts > 0", name="attempts_valid"),
        # A claim token exists exactly while a worker or a run holds the row; a claim has a lease.
        CheckConstraint("(state IN ('claimed', 'launched')) = (claim_token IS NOT NULL)", name="token_consistent"),
        CheckConstraint("state <> 'claimed' OR lease_expires_at IS NOT NULL", name="lease_consistent"),
        # Dedup while a trigger is live: a second request returns the pending one; once it is finished,
        # the same key may be enqueued again (a new build of the same version, say).
        Index(
            "uq_trigger_queue_live_dedup_key",
            "kind",
            "dedup_key",
            unique=True,
            sqlite_where=text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
            postgresql_where=text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
        ),
        # Partial indexes over the live states keep claims fast however many finished rows there are.
        Index(
            "ix_trigger_queue_available",
            "kind",
            "available_at",
            "id",
            sqlite_where=text("state = 'available'"),
            postgresql_where=text("state = 'available'"),
        ),
        Index(
            "ix_trigger_queue_claimed_lease",
            "lease_expires_at",
            sqlite_where=text("state = 'claimed'"),
            postgresql_where=text("state = 'claimed'"),
        ),
        Index(
            "ix_trigger_queue_launched",
            "run_id",
            sqlite_where=text("state = 'launched'"),
            postgresql_where=text("state = 'launched'"),
        ),
        # Pruning's index; finished rows only, so a claim (a new row version) writes no NULL entry.
        Index(
            "ix_trigger_queue_finished_at",
            "finished_at",
            sqlite_where=text("finished_at IS NOT NULL"),
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16), default=QueueState.AVAILABLE.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    available_at: Mapped[datetime] = created_column()
    claimed_at: Mapped[datetime | None] = mapped_column()
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    claim_token: Mapped[str | None] = mapped_column(String(36))
    worker: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column()


# ---------------------------------------------------------------------------------------------------
# Release builds (platform-wide: they belong to no tenant)


class ReleaseBuild(Base):
    __tablename__ = "release_builds"
    __table_args__ = (status_check("status", list(BuildStatus)),)
    id: Mapped[str] = id_column()
    tag: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    prerelease: Mapped[bool] = mapped_column(Boolean, default=False)
    repositories: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default=BuildStatus.PENDING.value)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    github_release_id: Mapped[str | None] = mapped_column(String(64))
    github_release_url: Mapped[str | None] = mapped_column(String(1000))
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RepoBuild(Base):
    __tablename__ = "repo_builds"
    __table_args__ = (
        UniqueConstraint("release_build_id", "repository"),
        status_check("status", list(BuildStatus)),
    )
    id: Mapped[str] = id_column()
    release_build_id: Mapped[str] = mapped_column(ForeignKey("release_builds.id", ondelete="CASCADE"))
    repository: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=BuildStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    github_run_id: Mapped[str | None] = mapped_column(String(64))
    github_run_url: Mapped[str | None] = mapped_column(String(1000))
    conclusion: Mapped[str | None] = mapped_column(String(32))
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    checksums: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# ---------------------------------------------------------------------------------------------------
# Workflows, executions and human-in-the-loop approvals


class Workflow(Base):
    """A named workflow of a tenant; its definitions are its versions (`latest_version` is current)."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("tenant_id", "id"), UniqueConstraint("tenant_id", "name"))
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowDefinition(Base):
    """One version of a workflow: never changed once written (a PUT adds the next version)."""

    __tablename__ = "workflow_definitions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("tenant_id", "name", "version"),
        UniqueConstraint("workflow_id", "version"),
        ForeignKeyConstraint(["tenant_id", "workflow_id"], ["workflows.tenant_id", "workflows.id"]),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    workflow_id: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    description: Mapped[str | None] = mapped_column(Text)
    trigger_on: Mapped[list[Any]] = mapped_column(default=list)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()


class WorkflowStep(Base):
    """A step of one workflow version, as defined (`config` holds the kind's fields)."""

    __tablename__ = "workflow_steps"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "workflow_definition_id"],
            ["workflow_definitions.tenant_id", "workflow_definitions.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("tenant_id", "id"),
        UniqueConstraint("workflow_definition_id", "position"),
        UniqueConstraint("workflow_definition_id", "name"),
        CheckConstraint(one_of("kind", STEP_KINDS), name="kind_valid"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    workflow_definition_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WorkflowExecution(Base):
    __tablename__ = "workflow_executions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "workflow_definition_id"],
            ["workflow_definitions.tenant_id", "workflow_definitions.id"],
        ),
        UniqueConstraint("tenant_id", "id"),
        status_check("status", list(ExecutionStatus)),
        Index("ix_workflow_executions_tenant_id_status", "tenant_id", "status"),
        Index("ix_workflow_executions_tenant_id_workflow_id_created_at", "tenant_id", "workflow_id", "created_at"),
        # One execution per (event, workflow) of a tenant: a redelivered or replayed event starts nothing new.
        UniqueConstraint("tenant_id", "dedup_key"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    workflow_definition_id: Mapped[str] = mapped_column(String(36))
    workflow_id: Mapped[str | None] = mapped_column(String(36))
    version: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=ExecutionStatus.QUEUED.value)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    trigger: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"source": "api"|"event", ...}
    dedup_key: Mapped[str | None] = mapped_column(String(300))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)


class WorkflowExecutionStep(Base):
    """The saved state of one step of one execution: a run resumes from these rows."""

    __tablename__ = "workflow_execution_steps"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("workflow_execution_id", "name"),
        status_check("status", list(StepStatus)),
        CheckConstraint(one_of("kind", STEP_KINDS), name="kind_valid"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(String(36))
    workflow_execution_id: Mapped[str] = mapped_column(String(36))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)


class ConsumedEvent(Base):
    """An event the orchestrator consumed (HTTP or RabbitMQ), kept by (tenant, id) so a repeat is
    recognised: the id is the producer's, so another tenant may use it too."""

    __tablename__ = "consumed_events"
    __table_args__ = (Index("ix_consumed_events_tenant_id_received_at", "tenant_id", "received_at"),)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column()
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(16))
    executions: Mapped[list[Any]] = mapped_column(default=list)
    received_at: Mapped[datetime] = created_column()


class HitlApproval(Base):
    """A request for a person's decision: an approval step of a workflow execution, or a standalone
    request from another service (no execution; an optional callback). Exactly one decision wins."""

    __tablename__ = "hitl_approvals"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
        ),
        UniqueConstraint("tenant_id", "id"),
        # A re-executed run asking again for its step's approval finds the first one.
        UniqueConstraint("workflow_execution_id", "step_name"),
        status_check("status", list(ApprovalStatus)),
        CheckConstraint(one_of("on_timeout", APPROVAL_OUTCOMES), name="on_timeout_valid"),
        CheckConstraint(one_of("on_reject", APPROVAL_ON_REJECT), name="on_reject_valid"),
        CheckConstraint(f"outcome IS NULL OR {one_of('outcome', APPROVAL_OUTCOMES)}", name="outcome_valid"),
        # An outcome exactly when decided or expired (a cancelled approval has none).
        CheckConstraint("(status IN ('pending', 'cancelled')) = (outcome IS NULL)", name="outcome_consistent"),
        CheckConstraint("step_name IS NULL OR workflow_execution_id IS NOT NULL", name="step_needs_execution"),
        Index(
            "ix_hitl_approvals_pending_expires_at",
            "expires_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_hitl_approvals_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_hitl_approvals_tenant_id_workflow_execution_id", "tenant_id", "workflow_execution_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    workflow_execution_id: Mapped[str | None] = mapped_column(String(36))
    step_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ApprovalStatus.PENDING.value)
    outcome: Mapped[str | None] = mapped_column(String(8))
    requested_by: Mapped[str] = mapped_column(String(200))
    # User ids, and roles as "role:<name>" (any member of the tenant holding the role).
    assignees: Mapped[list[Any]] = mapped_column(default=list)
    message: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    expires_at: Mapped[datetime] = mapped_column()
    on_timeout: Mapped[str] = mapped_column(String(8))
    on_reject: Mapped[str] = mapped_column(String(8), default="stop")
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column()
    decision_comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()


class HitlApprovalCallback(Base):
    """The recorded intent to call a standalone approval's callback URL, written in the decision's own
    transaction (a crash between the decision and the call loses nothing); delivered at least once."""

    __tablename__ = "hitl_approval_callbacks"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "hitl_approval_id"], ["hitl_approvals.tenant_id", "hitl_approvals.id"]),
        status_check("status", list(CallbackStatus)),
        Index(
            "ix_hitl_approval_callbacks_pending",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36))
    hitl_approval_id: Mapped[str] = mapped_column(String(36), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=CallbackStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = created_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    delivered_at: Mapped[datetime | None] = mapped_column()


# ---------------------------------------------------------------------------------------------------
# The seven-phase recovery pipeline


class SyncProgress(Base):
    """One user's progress through one sync: the furthest phase reached and its status. It never moves
    backwards (domain.phases.advance_progress holds the allowed moves)."""

    __tablename__ = "sync_progress"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "sync_id"),
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        CheckConstraint("percent BETWEEN 0 AND 100", name="percent_range"),
        status_check("status", list(PhaseStatus)),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    seller_id: Mapped[str | None] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PhaseStatus.PENDING.value)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    completed_at: Mapped[datetime | None] = mapped_column()


class PhaseOutcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # the trigger goes back to the queue with its backoff
    DEAD = "dead"  # failed on its last attempt, or permanently


class PhaseAudit(Base):
    """One row per phase run of one trigger: what /metrics and the sync view read."""

    __tablename__ = "phase_audit"
    __table_args__ = (
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        status_check("outcome", list(PhaseOutcome), name="outcome_valid"),
        Index("ix_phase_audit_tenant_id_user_id_sync_id", "tenant_id", "user_id", "sync_id"),
        Index("ix_phase_audit_finished_at", "finished_at"),
        # The rows not yet folded into phase_metrics: what a scrape adds to the totals, and the next fold.
        Index("ix_phase_audit_uncounted", "id", postgresql_where=text("NOT counted"), sqlite_where=text("NOT counted")),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    trigger_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))  # in phase_metrics


class PhaseMetric(Base):
    """/metrics' phase counters, folded from the phase audit rows (domain/phase_metrics.py): per phase,
    series (`duration`: a phase's own run time, every outcome; `latency`: enqueue -> completed), outcome
    and histogram bucket (`le`, its upper bound in seconds; infinity for the last), the observations and
    their sum. Only ever added to, whatever is pruned."""

    __tablename__ = "phase_metrics"
    __table_args__ = (CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),)
    phase: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)


class LearningRecord(Base):
    """Phase 6: a rejected claim, kept for the learning pipeline (triggered once per record)."""

    __tablename__ = "learning_records"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id", "sync_id", "claim_id", "reason_code"),)
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    seller_id: Mapped[str | None] = mapped_column(String(200))
    claim_id: Mapped[str] = mapped_column(String(200))
    reason_code: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pipeline_job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    pipeline_triggered_at: Mapped[datetime | None] = mapped_column()


class ProofPacketStatus(enum.StrEnum):
    """pending (fee computed, nothing charged) -> charged (payment intent succeeded) -> ready (files written)."""

    PENDING = "pending"
    CHARGED = "charged"
    READY = "ready"


class ProofPacket(Base):
    """Phase 7: the payout, its platform fee and the charge, and the packet's files under PROOF_PACKET_DIR.
    Amounts are exact decimal text; `fee_minor` is what was charged, in the currency's minor units."""

    __tablename__ = "proof_packets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "payout_id"),
        UniqueConstraint("fee_idempotency_key"),
        status_check("status", list(ProofPacketStatus)),
        Index("ix_proof_packets_tenant_id_user_id", "tenant_id", "user_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    claim_id: Mapped[str] = mapped_column(String(200))
    payout_id: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    payout_amount: Mapped[str] = mapped_column(String(40))
    fee_amount: Mapped[str] = mapped_column(String(40))
    fee_minor: Mapped[int] = mapped_column(BigInteger)
    fee_idempotency_key: Mapped[str] = mapped_column(String(200))
    payment_intent_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ProofPacketStatus.PENDING.value)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    json_sha256: Mapped[str | None] = mapped_column(String(64))
    pdf_path: Mapped[str | None] = mapped_column(String(1000))
    json_path: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class PhaseEventType(enum.StrEnum):
    """What a user's live stream carries (domain.phase_events appends, the live side reads)."""

    PHASE_STARTED = "phase_started"
    PHASE_COMPLETED = "phase_completed"
    PHASE_FAILED = "phase_failed"
    PROMPT = "prompt"


class PhaseEvent(Base):
    """One event of a user's stream, numbered `seq` per (tenant, user) from 1 with no reuse (the counter
    lives in phase_event_sequences, so pruning old events never lets a number come back)."""

    __tablename__ = "phase_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "seq"),
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        status_check("type", list(PhaseEventType), name="type_valid"),
        Index("ix_phase_events_created_at", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))
    sync_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()


class PhaseEventSequence(Base):
    """The last `seq` handed out per (tenant, user): an upsert on this row serialises concurrent appends
    for one user on both backends (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "phase_event_sequences"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


# ---------------------------------------------------------------------------------------------------
# HTTP idempotency and webhook deliveries


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "scope", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    scope: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = created_column()


# ---------------------------------------------------------------------------------------------------
# Outbound messages (batch-job triggers): the transactional outbox of the message bus


class OutboundMessageStatus(enum.StrEnum):
    """pending -> published, never back (domain.batch_jobs owns the move)."""

    PENDING = "pending"
    PUBLISHED = "published"


class OutboundMessage(Base):
    """One message to the bus, written in the producer's transaction; a relay publishes it to RabbitMQ
    (when configured) and marks it published. `message_id` is what consumers dedupe on."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        status_check("status", list(OutboundMessageStatus)),
        Index(
            "ix_outbound_messages_pending",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbound_messages_job_created_at", "job", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(200))
    exchange: Mapped[str] = mapped_column(String(200), default="")
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    job: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboundMessageStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = created_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = created_column()
    published_at: Mapped[datetime | None] = mapped_column()


# ---------------------------------------------------------------------------------------------------
# The status guard: only domain.lifecycle.transition() may write a lifecycle status, and only
# domain.lifecycle.transition_binding() a workflow binding's (a new binding may start in any status).

_LIFECYCLE_ENTITIES = (AutomationVersion, Project)


class StatusWriteOutsideLifecycle(RuntimeError):
    pass


def allow_status_write(entity: AutomationVersion | Project | WorkflowBinding, to: Status | BindingStatus) -> None:
    entity.__dict__["_lifecycle_allowed"] = to.value


@event.listens_for(Session, "before_flush")
def _guard_status_writes(session: Session, _context: Any, _instances: Any) -> None:
    from sqlalchemy import inspect as sa_inspect

    for obj in session.new:
        if isinstance(obj, _LIFECYCLE_ENTITIES):
            if obj.status is None:
                obj.status = INITIAL_STATUS.value
            if obj.status != INITIAL_STATUS.value and obj.__dict__.get("_lifecycle_allowed") != obj.status:
                raise StatusWriteOutsideLifecycle(
                    f"new {obj.__tablename__} must start {INITIAL_STATUS.value!r}, not {obj.status!r}"
                )
    for obj in session.dirty:
        if isinstance(obj, (*_LIFECYCLE_ENTITIES, WorkflowBinding)):
            history = sa_inspect(obj).attrs.status.history  # type: ignore[attr-defined]
            if history.has_changes() and obj.__dict__.get("_lifecycle_allowed") != obj.status:
                raise StatusWriteOutsideLifecycle(
                    f"{obj.__tablename__} {obj.id}: status written outside domain.lifecycle.transition()"
                )
    for obj in list(session.new) + list(session.dirty):
        obj.__dict__.pop("_lifecycle_allowed", None)
