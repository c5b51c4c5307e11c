"""approval decision fields: what an approval asks its decider besides approve/reject (`fields`, as
declared; existing approvals declare none) and the values its decision recorded (`field_values`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fields", JSON, server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column("field_values", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.drop_column("field_values")
        batch_op.drop_column("fields")
