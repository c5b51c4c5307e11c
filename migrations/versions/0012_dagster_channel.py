"""notifications: the `dagster` channel (the deploy history, reported to Dagster as asset events from the
outbox).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _channels(channels: str) -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_notifications_channel_valid"), type_="check")
        batch_op.create_check_constraint(op.f("ck_notifications_channel_valid"), f"channel IN ({channels})")


def upgrade() -> None:
    _channels("'email', 'in_app', 'slack', 'dagster'")


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE channel = 'dagster'")
    _channels("'email', 'in_app', 'slack'")
