"""Workflows, executions and human-in-the-loop approvals."""

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
    BigId,
    JSONType,
    created_column,
    id_column,
    one_of,
    status_check,
    utcnow,
)


class ExecutionStatus(enum.StrEnum):
    """A workflow execution; the moves between them are written down in domain.workflows.workflow_states."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class StepStatus(enum.StrEnum):
    """One step of one execution (domain.workflows.workflow_states)."""

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
    """A human approval (domain.workflows.approvals owns the moves): pending -> approved | rejected | expired |
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
    # The decision fields it asks for (domain/workflows/decision_fields.py, as declared) and the values
    # its decision recorded (a timeout's: the defaults); None until it leaves pending, and when cancelled.
    fields: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    field_values: Mapped[dict[str, Any] | None] = mapped_column()
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
        # /metrics counts the dead ones (domain/core/backlogs.py).
        Index(
            "ix_hitl_approval_callbacks_dead",
            "created_at",
            sqlite_where=text("status = 'dead'"),
            postgresql_where=text("status = 'dead'"),
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
