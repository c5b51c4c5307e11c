"""seven-phase pipeline: phase events (the users' live streams)

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-23 08:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.models

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = domain.models.UTCDateTime(timezone=True)


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


def downgrade() -> None:
    op.drop_table("phase_event_sequences")
    with op.batch_alter_table("phase_events", schema=None) as batch_op:
        batch_op.drop_index("ix_phase_events_created_at")
    op.drop_table("phase_events")
