"""flow_counters: /metrics' counters and histogram buckets of the flows (builds, deploys, releases,
workflows, approvals, batch messages, dead triggers), bumped by each flow in the transaction of the event
it counts, so no figure goes back when rows are pruned. They start at zero. And partial indexes over
the dead notifications and approval callbacks, which /metrics counts at each scrape.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flow_counters",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("labels", sa.String(length=500), nullable=False),
        sa.Column("le", sa.Float(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels", "le", name=op.f("pk_flow_counters")),
    )
    # /metrics counts dead notifications and approval callbacks at each scrape: their rows only.
    for table in ("notifications", "hitl_approval_callbacks"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(
                f"ix_{table}_dead",
                ["created_at"],
                unique=False,
                postgresql_where=sa.text("status = 'dead'"),
                sqlite_where=sa.text("status = 'dead'"),
            )


def downgrade() -> None:
    for table in ("notifications", "hitl_approval_callbacks"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_dead")
    op.drop_table("flow_counters")
