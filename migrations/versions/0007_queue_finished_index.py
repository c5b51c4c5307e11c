"""trigger_queue: the finished_at index covers finished rows only (a claim no longer writes a NULL entry)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = sa.text("finished_at IS NOT NULL")


def upgrade() -> None:
    # Only pruning reads this index (`finished_at < cutoff`, which implies the predicate). As a full
    # index it took an entry for every row version, so every claim (a non-HOT update) wrote a NULL one.
    op.drop_index("ix_trigger_queue_finished_at", table_name="trigger_queue")
    op.create_index(
        "ix_trigger_queue_finished_at",
        "trigger_queue",
        ["finished_at"],
        postgresql_where=FINISHED,
        sqlite_where=FINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_trigger_queue_finished_at", table_name="trigger_queue")
    op.create_index("ix_trigger_queue_finished_at", "trigger_queue", ["finished_at"])
