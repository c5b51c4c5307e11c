"""Callers' ids unique per tenant: a consumed event is kept by (tenant_id, id), not its id alone (another
tenant's event of the same id was answered `duplicate` with the first tenant's executions), and an
execution's dedup key (which holds the event id) is unique per tenant. Rows are kept both ways; a
downgrade is refused while two tenants share an event id or a dedup key (the old keys cannot hold them).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consumed_events", recreate="always") as batch:
        batch.drop_constraint("pk_consumed_events", type_="primary")
        batch.create_primary_key("pk_consumed_events", ["tenant_id", "id"])
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_constraint("uq_workflow_executions_dedup_key", type_="unique")
        batch.create_unique_constraint("uq_workflow_executions_tenant_id_dedup_key", ["tenant_id", "dedup_key"])


def _refuse_shared(table: str, column: str) -> None:
    shared = op.get_bind().execute(
        sa.text(
            f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL "
            f"GROUP BY {column} HAVING COUNT(DISTINCT tenant_id) > 1 LIMIT 5"
        )
    )
    values = [row[0] for row in shared]
    if values:
        raise RuntimeError(
            f"cannot downgrade below 0009: {table}.{column} {values} is used by several tenants "
            "(the old key is global; remove or rename those rows first)"
        )


def downgrade() -> None:
    _refuse_shared("consumed_events", "id")
    _refuse_shared("workflow_executions", "dedup_key")
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_constraint("uq_workflow_executions_tenant_id_dedup_key", type_="unique")
        batch.create_unique_constraint("uq_workflow_executions_dedup_key", ["dedup_key"])
    with op.batch_alter_table("consumed_events", recreate="always") as batch:
        batch.drop_constraint("pk_consumed_events", type_="primary")
        batch.create_primary_key("pk_consumed_events", ["id"])
