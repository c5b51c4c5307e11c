"""seven-phase pipeline: phase events (the users' live streams), sync progress one row per sync, phase
audit, learning records, proof packets

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-23 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.core.models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = domain.core.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "phase_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_phase_events_phase_range")),
        sa.CheckConstraint(
            "type IN ('phase_started', 'phase_completed', 'phase_failed', 'prompt')",
            name=op.f("ck_phase_events_type_valid"),
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_phase_events_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phase_events")),
        sa.UniqueConstraint("tenant_id", "user_id", "seq", name=op.f("uq_phase_events_tenant_id_user_id_seq")),
    )
    with op.batch_alter_table("phase_events", schema=None) as batch_op:
        batch_op.create_index("ix_phase_events_created_at", ["created_at"], unique=False)
    op.create_table(
        "phase_event_sequences",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_phase_event_sequences_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name=op.f("pk_phase_event_sequences")),
    )

    # sync_progress (0001: one row per phase, never written) becomes one row per (tenant, user, sync).
    op.drop_table("sync_progress")
    op.create_table(
        "sync_progress",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("seller_id", sa.String(length=200), nullable=True),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("completed_at", UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')", name=op.f("ck_sync_progress_status_valid")
        ),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_sync_progress_phase_range")),
        sa.CheckConstraint("percent BETWEEN 0 AND 100", name=op.f("ck_sync_progress_percent_range")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_sync_progress_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_progress")),
        sa.UniqueConstraint("tenant_id", "user_id", "sync_id", name=op.f("uq_sync_progress_tenant_id_user_id_sync_id")),
    )
    op.create_table(
        "phase_audit",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("trigger_id", sa.BigInteger(), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=False),
        sa.CheckConstraint("outcome IN ('completed', 'failed', 'dead')", name=op.f("ck_phase_audit_outcome_valid")),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_phase_audit_phase_range")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_phase_audit_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phase_audit")),
    )
    with op.batch_alter_table("phase_audit", schema=None) as batch_op:
        batch_op.create_index("ix_phase_audit_finished_at", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_phase_audit_tenant_id_user_id_sync_id", ["tenant_id", "user_id", "sync_id"], unique=False
        )
    op.create_table(
        "learning_records",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("seller_id", sa.String(length=200), nullable=True),
        sa.Column("claim_id", sa.String(length=200), nullable=False),
        sa.Column("reason_code", sa.String(length=100), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("pipeline_job_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("pipeline_triggered_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_learning_records_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learning_records")),
        sa.UniqueConstraint(
            "tenant_id",
            "user_id",
            "sync_id",
            "claim_id",
            "reason_code",
            name=op.f("uq_learning_records_tenant_id_user_id_sync_id_claim_id_reason_code"),
        ),
    )
    op.create_table(
        "proof_packets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("claim_id", sa.String(length=200), nullable=False),
        sa.Column("payout_id", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payout_amount", sa.String(length=40), nullable=False),
        sa.Column("fee_amount", sa.String(length=40), nullable=False),
        sa.Column("fee_minor", sa.BigInteger(), nullable=False),
        sa.Column("fee_idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("json_sha256", sa.String(length=64), nullable=True),
        sa.Column("pdf_path", sa.String(length=1000), nullable=True),
        sa.Column("json_path", sa.String(length=1000), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("status IN ('pending', 'charged', 'ready')", name=op.f("ck_proof_packets_status_valid")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_proof_packets_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proof_packets")),
        sa.UniqueConstraint("fee_idempotency_key", name=op.f("uq_proof_packets_fee_idempotency_key")),
        sa.UniqueConstraint(
            "tenant_id", "user_id", "payout_id", name=op.f("uq_proof_packets_tenant_id_user_id_payout_id")
        ),
    )
    with op.batch_alter_table("proof_packets", schema=None) as batch_op:
        batch_op.create_index("ix_proof_packets_tenant_id_user_id", ["tenant_id", "user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("proof_packets", schema=None) as batch_op:
        batch_op.drop_index("ix_proof_packets_tenant_id_user_id")
    op.drop_table("proof_packets")
    op.drop_table("learning_records")
    with op.batch_alter_table("phase_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_phase_audit_tenant_id_user_id_sync_id")
        batch_op.drop_index("ix_phase_audit_finished_at")
    op.drop_table("phase_audit")
    op.drop_table("sync_progress")
    op.create_table(  # 0001's shape
        "sync_progress",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress_pct", sa.Float(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("completed_at", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')", name=op.f("ck_sync_progress_status_valid")
        ),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_sync_progress_phase_range")),
        sa.CheckConstraint("progress_pct BETWEEN 0 AND 100", name=op.f("ck_sync_progress_progress_range")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_sync_progress_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_progress")),
        sa.UniqueConstraint(
            "tenant_id", "user_id", "sync_id", "phase", name=op.f("uq_sync_progress_tenant_id_user_id_sync_id_phase")
        ),
    )
    op.drop_table("phase_event_sequences")
    with op.batch_alter_table("phase_events", schema=None) as batch_op:
        batch_op.drop_index("ix_phase_events_created_at")
    op.drop_table("phase_events")
