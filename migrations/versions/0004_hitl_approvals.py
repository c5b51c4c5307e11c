"""hitl approvals reshaped: standalone requests, assignees, expiry with on_timeout, callbacks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 08:40:00

The 0001 table was never written by any code (no flow used it), so it is dropped and made again in its
new shape: execution and step optional (standalone requests), the step by name (workflow steps are
reshaped by the workflow engine), assignees, message, expires_at with on_timeout, on_reject, outcome,
callback URL; and the callbacks' outbox.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.core.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = domain.core.models.UTCDateTime(timezone=True)
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    _drop_0001_shape()
    op.create_table(
        "hitl_approvals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_execution_id", sa.String(length=36), nullable=True),
        sa.Column("step_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("assignees", JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("on_timeout", sa.String(length=8), nullable=False),
        sa.Column("on_reject", sa.String(length=8), nullable=False),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_at", UTC, nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')",
            name=op.f("ck_hitl_approvals_status_valid"),
        ),
        sa.CheckConstraint(
            "on_timeout IN ('approve', 'reject', 'fail')", name=op.f("ck_hitl_approvals_on_timeout_valid")
        ),
        sa.CheckConstraint("on_reject IN ('stop', 'continue')", name=op.f("ck_hitl_approvals_on_reject_valid")),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('approve', 'reject', 'fail')",
            name=op.f("ck_hitl_approvals_outcome_valid"),
        ),
        sa.CheckConstraint(
            "(status IN ('pending', 'cancelled')) = (outcome IS NULL)",
            name=op.f("ck_hitl_approvals_outcome_consistent"),
        ),
        sa.CheckConstraint(
            "step_name IS NULL OR workflow_execution_id IS NOT NULL",
            name=op.f("ck_hitl_approvals_step_needs_execution"),
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_hitl_approvals_tenant_id_tenants")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
            name=op.f("fk_hitl_approvals_tenant_id_workflow_execution_id_workflow_executions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hitl_approvals")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_hitl_approvals_tenant_id_id")),
        sa.UniqueConstraint(
            "workflow_execution_id", "step_name", name=op.f("uq_hitl_approvals_workflow_execution_id_step_name")
        ),
    )
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hitl_approvals_pending_expires_at",
            ["expires_at"],
            unique=False,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
        batch_op.create_index("ix_hitl_approvals_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_hitl_approvals_tenant_id_workflow_execution_id", ["tenant_id", "workflow_execution_id"], unique=False
        )

    op.create_table(
        "hitl_approval_callbacks",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("hitl_approval_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name=op.f("ck_hitl_approval_callbacks_status_valid")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "hitl_approval_id"],
            ["hitl_approvals.tenant_id", "hitl_approvals.id"],
            name=op.f("fk_hitl_approval_callbacks_tenant_id_hitl_approval_id_hitl_approvals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hitl_approval_callbacks")),
        sa.UniqueConstraint("hitl_approval_id", name=op.f("uq_hitl_approval_callbacks_hitl_approval_id")),
    )
    with op.batch_alter_table("hitl_approval_callbacks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hitl_approval_callbacks_pending",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )


def _drop_0001_shape() -> None:
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_hitl_approvals_tenant_id_status")
        batch_op.drop_index("ix_hitl_approvals_pending_timeout", sqlite_where=PENDING, postgresql_where=PENDING)
    op.drop_table("hitl_approvals")


def downgrade() -> None:
    with op.batch_alter_table("hitl_approval_callbacks", schema=None) as batch_op:
        batch_op.drop_index("ix_hitl_approval_callbacks_pending", sqlite_where=PENDING, postgresql_where=PENDING)
    op.drop_table("hitl_approval_callbacks")
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_hitl_approvals_tenant_id_workflow_execution_id")
        batch_op.drop_index("ix_hitl_approvals_tenant_id_created_at")
        batch_op.drop_index("ix_hitl_approvals_pending_expires_at", sqlite_where=PENDING, postgresql_where=PENDING)
    op.drop_table("hitl_approvals")
    # The 0001 shape, as it was.
    op.create_table(
        "hitl_approvals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_execution_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_step_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("approvers", JSON, nullable=False),
        sa.Column("timeout_at", UTC, nullable=False),
        sa.Column("default_decision", sa.String(length=8), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("decided_at", UTC, nullable=True),
        sa.CheckConstraint(
            "default_decision IN ('approve', 'reject')", name=op.f("ck_hitl_approvals_default_decision_valid")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'timed_out')",
            name=op.f("ck_hitl_approvals_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
            name=op.f("fk_hitl_approvals_tenant_id_workflow_execution_id_workflow_executions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_step_id"],
            ["workflow_steps.tenant_id", "workflow_steps.id"],
            name=op.f("fk_hitl_approvals_tenant_id_workflow_step_id_workflow_steps"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hitl_approvals")),
        sa.UniqueConstraint(
            "workflow_execution_id",
            "workflow_step_id",
            name=op.f("uq_hitl_approvals_workflow_execution_id_workflow_step_id"),
        ),
    )
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hitl_approvals_pending_timeout",
            ["timeout_at"],
            unique=False,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
        batch_op.create_index("ix_hitl_approvals_tenant_id_status", ["tenant_id", "status"], unique=False)
