"""phase_metrics: /metrics' phase counters, folded from the phase audit rows (phase_audit.counted marks
the folded ones; a scrape reads the totals and the rows not folded yet), starting from the audit rows
there are

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 01:30:00
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As domain/phases/phase_metrics.py had them when this revision was written (a migration never changes later).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0)


def _le(bounds: Sequence[float], value: float) -> float:
    return next((bound for bound in bounds if value <= bound), math.inf)


def _utc(value: object) -> datetime:
    """A stored time: PostgreSQL gives it aware, SQLite as UTC text."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def upgrade() -> None:
    table = op.create_table(
        "phase_metrics",
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("series", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("le", sa.Float(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_phase_metrics_phase_range")),
        sa.PrimaryKeyConstraint("phase", "series", "outcome", "le", name=op.f("pk_phase_metrics")),
    )
    # First: on PostgreSQL the new column's ACCESS EXCLUSIVE lock holds off the audit rows of code still
    # running until this migration commits (they are then folded by the sweeper, not here).
    # The rows there are get `true` (folded below): on PostgreSQL a column added with a constant default is
    # a catalog change, no row rewritten; new rows then default to false. (SQLite: batch mode copies the
    # table anyway.)
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("phase_audit", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), server_default=sa.text("true" if postgres else "false"), nullable=False)
        )
    if postgres:
        op.alter_column("phase_audit", "counted", server_default=sa.text("false"))
    # The counters so far, from the audit rows (and, for latency, the trigger rows still kept).
    counts: dict[tuple[int, str, str, float], list[float]] = defaultdict(lambda: [0, 0.0])
    bind = op.get_bind()
    for phase, outcome, duration in bind.execute(sa.text("SELECT phase, outcome, duration_s FROM phase_audit")):
        cell = counts[(phase, "duration", outcome, _le(DURATION_BUCKETS, duration))]
        cell[0] += 1
        cell[1] += duration
    completed = bind.execute(
        sa.text(
            "SELECT a.phase, a.finished_at, q.created_at FROM phase_audit a "
            "JOIN trigger_queue q ON q.id = a.trigger_id WHERE a.outcome = 'completed'"
        )
    )
    for phase, finished_at, created_at in completed:
        seconds = max(
            (_utc(finished_at) - _utc(created_at)).total_seconds(), 0.0
        )  # two hosts' clocks, as phase_metrics clamps
        cell = counts[(phase, "latency", "completed", _le(LATENCY_BUCKETS, seconds))]
        cell[0] += 1
        cell[1] += seconds
    if counts:
        op.bulk_insert(
            table,
            [
                {"phase": phase, "series": series, "outcome": outcome, "le": le, "count": n, "total": total}
                for (phase, series, outcome, le), (n, total) in counts.items()
            ],
        )
    if not postgres:  # every audit row there is, folded above: counted
        bind.execute(sa.text("UPDATE phase_audit SET counted = true"))
    with op.batch_alter_table("phase_audit", schema=None) as batch_op:
        batch_op.create_index(
            "ix_phase_audit_uncounted",
            ["id"],
            unique=False,
            postgresql_where=sa.text("NOT counted"),
            sqlite_where=sa.text("NOT counted"),
        )


def downgrade() -> None:
    with op.batch_alter_table("phase_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_phase_audit_uncounted")
        batch_op.drop_column("counted")
    op.drop_table("phase_metrics")
