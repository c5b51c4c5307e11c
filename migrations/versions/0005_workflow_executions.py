"""workflows, versioned definitions, execution steps, consumed events

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 08:45:00

Reshapes the workflow tables of 0001 for workflow executions: a `workflows` row per named workflow whose
`workflow_definitions` are its versions (with `trigger_on`); steps with `depends_on` and the kinds
service_call / approval / publish; executions with input, trigger, dedup key and the statuses queued ...
rejected; one `workflow_execution_steps` row per step of an execution (the state a run resumes from);
`consumed_events` (dedup of consumed events by id).
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import uuid4

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UTC_DT = domain.models.UTCDateTime(timezone=True)

OLD_EXECUTION_STATUSES = "status IN ('pending', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')"
NEW_EXECUTION_STATUSES = (
    "status IN ('queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'rejected', 'cancelled')"
)
OLD_KINDS = "kind IN ('action', 'approval', 'batch_job')"
NEW_KINDS = "kind IN ('service_call', 'approval', 'publish')"
STEP_STATUSES = "status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'rejected', 'skipped', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC_DT, nullable=False),
        sa.Column("updated_at", UTC_DT, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_workflows_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_workflows_tenant_id_id")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_workflows_tenant_id_name")),
    )

    # Definitions become versions of a workflow: existing ones get a workflow per (tenant, name).
    with op.batch_alter_table("workflow_definitions") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("trigger_on", JSON, nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(length=200), nullable=True))
    connection = op.get_bind()
    now = datetime.now(UTC)
    definitions = connection.execute(
        sa.text("SELECT id, tenant_id, name, version FROM workflow_definitions ORDER BY version")
    ).all()
    workflows: dict[tuple[str, str], str] = {}
    for definition in definitions:
        key = (definition.tenant_id, definition.name)
        if key not in workflows:
            workflows[key] = str(uuid4())
            connection.execute(
                sa.text(
                    "INSERT INTO workflows (id, tenant_id, name, active, latest_version, created_at, updated_at)"
                    " VALUES (:id, :tenant_id, :name, :active, :version, :now, :now)"
                ),
                {"id": workflows[key], "tenant_id": key[0], "name": key[1], "active": True, "version": 1, "now": now},
            )
        connection.execute(
            sa.text("UPDATE workflows SET latest_version = :version WHERE id = :id AND latest_version < :version"),
            {"id": workflows[key], "version": definition.version},
        )
        connection.execute(
            sa.text("UPDATE workflow_definitions SET workflow_id = :workflow_id, trigger_on = :empty WHERE id = :id"),
            {"workflow_id": workflows[key], "empty": "[]", "id": definition.id},
        )
    with op.batch_alter_table("workflow_definitions") as batch:
        batch.alter_column("workflow_id", existing_type=sa.String(length=36), nullable=False)
        batch.alter_column("trigger_on", existing_type=JSON, nullable=False)
        batch.create_unique_constraint(op.f("uq_workflow_definitions_workflow_id_version"), ["workflow_id", "version"])
        batch.create_foreign_key(
            op.f("fk_workflow_definitions_tenant_id_workflow_id_workflows"),
            "workflows",
            ["tenant_id", "workflow_id"],
            ["tenant_id", "id"],
        )

    # Steps: the kinds, and their dependencies.
    connection.execute(sa.text("UPDATE workflow_steps SET kind = 'service_call' WHERE kind = 'action'"))
    connection.execute(sa.text("UPDATE workflow_steps SET kind = 'publish' WHERE kind = 'batch_job'"))
    with op.batch_alter_table("workflow_steps") as batch:
        batch.drop_constraint(op.f("ck_workflow_steps_kind_valid"), type_="check")
        batch.add_column(sa.Column("depends_on", JSON, nullable=True))
    connection.execute(sa.text("UPDATE workflow_steps SET depends_on = :empty"), {"empty": "[]"})
    with op.batch_alter_table("workflow_steps") as batch:
        batch.alter_column("depends_on", existing_type=JSON, nullable=False)
        batch.create_check_constraint(op.f("ck_workflow_steps_kind_valid"), NEW_KINDS)
        batch.create_unique_constraint(
            op.f("uq_workflow_steps_workflow_definition_id_name"), ["workflow_definition_id", "name"]
        )

    # Executions: queued instead of pending, rejected added; input, trigger, dedup key, error.
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_constraint(op.f("ck_workflow_executions_status_valid"), type_="check")
        batch.add_column(sa.Column("workflow_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("input", JSON, nullable=True))
        batch.add_column(sa.Column("trigger", JSON, nullable=True))
        batch.add_column(sa.Column("dedup_key", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("requested_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("updated_at", UTC_DT, nullable=True))
    connection.execute(sa.text("UPDATE workflow_executions SET status = 'queued' WHERE status = 'pending'"))
    connection.execute(sa.text("UPDATE workflow_executions SET input = :empty, trigger = :empty"), {"empty": "{}"})
    with op.batch_alter_table("workflow_executions") as batch:
        batch.alter_column("input", existing_type=JSON, nullable=False)
        batch.alter_column("trigger", existing_type=JSON, nullable=False)
        batch.create_check_constraint(op.f("ck_workflow_executions_status_valid"), NEW_EXECUTION_STATUSES)
        batch.create_unique_constraint(op.f("uq_workflow_executions_dedup_key"), ["dedup_key"])
        batch.create_index(
            "ix_workflow_executions_tenant_id_workflow_id_created_at",
            ["tenant_id", "workflow_id", "created_at"],
            unique=False,
        )

    op.create_table(
        "workflow_execution_steps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_execution_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("depends_on", JSON, nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", UTC_DT, nullable=True),
        sa.Column("finished_at", UTC_DT, nullable=True),
        sa.Column("updated_at", UTC_DT, nullable=True),
        sa.CheckConstraint(NEW_KINDS, name=op.f("ck_workflow_execution_steps_kind_valid")),
        sa.CheckConstraint(STEP_STATUSES, name=op.f("ck_workflow_execution_steps_status_valid")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
            name=op.f("fk_workflow_execution_steps_tenant_id_workflow_execution_id_workflow_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_execution_steps")),
        sa.UniqueConstraint(
            "workflow_execution_id", "name", name=op.f("uq_workflow_execution_steps_workflow_execution_id_name")
        ),
    )
    op.create_table(
        "consumed_events",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", UTC_DT, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("executions", JSON, nullable=False),
        sa.Column("received_at", UTC_DT, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_consumed_events_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consumed_events")),
    )
    with op.batch_alter_table("consumed_events") as batch:
        batch.create_index("ix_consumed_events_tenant_id_received_at", ["tenant_id", "received_at"], unique=False)


def downgrade() -> None:
    op.drop_table("consumed_events")
    op.drop_table("workflow_execution_steps")
    connection = op.get_bind()
    with op.batch_alter_table("workflow_executions") as batch:
        batch.drop_index("ix_workflow_executions_tenant_id_workflow_id_created_at")
        batch.drop_constraint(op.f("uq_workflow_executions_dedup_key"), type_="unique")
        batch.drop_constraint(op.f("ck_workflow_executions_status_valid"), type_="check")
        for column in (
            "updated_at",
            "error",
            "requested_by",
            "dedup_key",
            "trigger",
            "input",
            "version",
            "workflow_id",
        ):
            batch.drop_column(column)
    connection.execute(sa.text("UPDATE workflow_executions SET status = 'pending' WHERE status = 'queued'"))
    connection.execute(sa.text("UPDATE workflow_executions SET status = 'failed' WHERE status = 'rejected'"))
    with op.batch_alter_table("workflow_executions") as batch:
        batch.create_check_constraint(op.f("ck_workflow_executions_status_valid"), OLD_EXECUTION_STATUSES)

    with op.batch_alter_table("workflow_steps") as batch:
        batch.drop_constraint(op.f("uq_workflow_steps_workflow_definition_id_name"), type_="unique")
        batch.drop_constraint(op.f("ck_workflow_steps_kind_valid"), type_="check")
        batch.drop_column("depends_on")
    connection.execute(sa.text("UPDATE workflow_steps SET kind = 'action' WHERE kind = 'service_call'"))
    connection.execute(sa.text("UPDATE workflow_steps SET kind = 'batch_job' WHERE kind = 'publish'"))
    with op.batch_alter_table("workflow_steps") as batch:
        batch.create_check_constraint(op.f("ck_workflow_steps_kind_valid"), OLD_KINDS)

    with op.batch_alter_table("workflow_definitions") as batch:
        batch.drop_constraint(op.f("fk_workflow_definitions_tenant_id_workflow_id_workflows"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_workflow_definitions_workflow_id_version"), type_="unique")
        batch.drop_column("created_by")
        batch.drop_column("trigger_on")
        batch.drop_column("workflow_id")
    op.drop_table("workflows")
