"""deployments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 05:38:32
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.core.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("automation_version_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=True),
        sa.Column("previous_live_version_id", sa.String(length=36), nullable=True),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("invoked_via", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column(
            "response_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True
        ),
        sa.Column("deadline_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "action IN ('deploy', 'resume', 'pause', 'rollback')", name=op.f("ck_deployments_action_valid")
        ),
        sa.CheckConstraint("actor_type IN ('user', 'system')", name=op.f("ck_deployments_actor_type_valid")),
        sa.CheckConstraint(
            "status IN ('requested', 'activating', 'committed', 'compensated', 'failed')",
            name=op.f("ck_deployments_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
            name=op.f("fk_deployments_tenant_id_automation_version_id_automation_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_deployments_tenant_id_idempotency_key")),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deployments_open",
            ["deadline_at"],
            unique=False,
            sqlite_where=sa.text("status IN ('requested', 'activating')"),
            postgresql_where=sa.text("status IN ('requested', 'activating')"),
        )
        batch_op.create_index(
            "ix_deployments_tenant_id_automation_version_id", ["tenant_id", "automation_version_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_deployments_tenant_id_automation_version_id")
        batch_op.drop_index(
            "ix_deployments_open",
            sqlite_where=sa.text("status IN ('requested', 'activating')"),
            postgresql_where=sa.text("status IN ('requested', 'activating')"),
        )

    op.drop_table("deployments")
