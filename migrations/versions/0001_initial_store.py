"""initial store

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:19:26.681150
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import domain.core.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "release_builds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("prerelease", sa.Boolean(), nullable=False),
        sa.Column(
            "repositories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("github_release_id", sa.String(length=64), nullable=True),
        sa.Column("github_release_url", sa.String(length=1000), nullable=True),
        sa.Column("archive_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')",
            name=op.f("ck_release_builds_status_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_builds")),
        sa.UniqueConstraint("tag", name=op.f("uq_release_builds_tag")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("received_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("previous_status", sa.String(length=32), nullable=True),
        sa.Column("new_status", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("actor_type IN ('user', 'system')", name=op.f("ck_audit_logs_actor_type_valid")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_audit_logs_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.create_index("ix_audit_logs_entity", ["entity_type", "entity_id", "created_at"], unique=False)
        batch_op.create_index("ix_audit_logs_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column(
            "response_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_idempotency_keys_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("tenant_id", "scope", "key", name=op.f("uq_idempotency_keys_tenant_id_scope_key")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("read_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("channel IN ('email', 'in_app', 'slack')", name=op.f("ck_notifications_channel_valid")),
        sa.CheckConstraint("status IN ('pending', 'sent', 'dead')", name=op.f("ck_notifications_status_valid")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_notifications_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_notifications_dedup_key")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_notifications_pending",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index("ix_notifications_tenant_id_recipient", ["tenant_id", "recipient"], unique=False)

    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("owner_user_id", sa.String(length=36), nullable=True),
        sa.Column("client_email", sa.String(length=320), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('Draft', 'Build in Progress', 'QA & Testing', 'Ready to Launch', 'Live', 'Paused', 'Archived', 'Error')",
            name=op.f("ck_projects_status_valid"),
        ),
        sa.ForeignKeyConstraint(["owner_user_id"], ["users.id"], name=op.f("fk_projects_owner_user_id_users")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_projects_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_projects_tenant_id_id")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_projects_tenant_id_name")),
    )
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_projects_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "repo_builds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("release_build_id", sa.String(length=36), nullable=False),
        sa.Column("repository", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=True),
        sa.Column("github_run_id", sa.String(length=64), nullable=True),
        sa.Column("github_run_url", sa.String(length=1000), nullable=True),
        sa.Column("conclusion", sa.String(length=32), nullable=True),
        sa.Column(
            "artifacts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "checksums",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')",
            name=op.f("ck_repo_builds_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["release_build_id"],
            ["release_builds.id"],
            name=op.f("fk_repo_builds_release_build_id_release_builds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repo_builds")),
        sa.UniqueConstraint("release_build_id", "repository", name=op.f("uq_repo_builds_release_build_id_repository")),
    )
    op.create_table(
        "sync_progress",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("sync_id", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress_pct", sa.Float(), nullable=False),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("started_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_sync_progress_status_valid"),
        ),
        sa.CheckConstraint("phase BETWEEN 1 AND 7", name=op.f("ck_sync_progress_phase_range")),
        sa.CheckConstraint("progress_pct BETWEEN 0 AND 100", name=op.f("ck_sync_progress_progress_range")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_sync_progress_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_progress")),
        sa.UniqueConstraint(
            "tenant_id",
            "user_id",
            "sync_id",
            "phase",
            name=op.f("uq_sync_progress_tenant_id_user_id_sync_id_phase"),
        ),
    )
    op.create_table(
        "tenant_memberships",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column(
            "roles",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("delegated", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_memberships_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tenant_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name=op.f("pk_tenant_memberships")),
    )
    op.create_table(
        "trigger_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(length=300), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(state IN ('claimed', 'launched')) = (claim_token IS NOT NULL)",
            name=op.f("ck_trigger_queue_token_consistent"),
        ),
        sa.CheckConstraint(
            "state <> 'claimed' OR lease_expires_at IS NOT NULL",
            name=op.f("ck_trigger_queue_lease_consistent"),
        ),
        sa.CheckConstraint(
            "state IN ('available', 'claimed', 'launched', 'done', 'dead', 'cancelled')",
            name=op.f("ck_trigger_queue_state_valid"),
        ),
        sa.CheckConstraint("attempts >= 0 AND max_attempts > 0", name=op.f("ck_trigger_queue_attempts_valid")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_trigger_queue_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_queue")),
    )
    with op.batch_alter_table("trigger_queue", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trigger_queue_available",
            ["kind", "available_at", "id"],
            unique=False,
            sqlite_where=sa.text("state = 'available'"),
            postgresql_where=sa.text("state = 'available'"),
        )
        batch_op.create_index(
            "ix_trigger_queue_claimed_lease",
            ["lease_expires_at"],
            unique=False,
            sqlite_where=sa.text("state = 'claimed'"),
            postgresql_where=sa.text("state = 'claimed'"),
        )
        batch_op.create_index("ix_trigger_queue_finished_at", ["finished_at"], unique=False)
        batch_op.create_index(
            "ix_trigger_queue_launched",
            ["run_id"],
            unique=False,
            sqlite_where=sa.text("state = 'launched'"),
            postgresql_where=sa.text("state = 'launched'"),
        )
        batch_op.create_index(
            "uq_trigger_queue_live_dedup_key",
            ["kind", "dedup_key"],
            unique=True,
            sqlite_where=sa.text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
            postgresql_where=sa.text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
        )

    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_workflow_definitions_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_definitions")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_workflow_definitions_tenant_id_id")),
        sa.UniqueConstraint(
            "tenant_id", "name", "version", name=op.f("uq_workflow_definitions_tenant_id_name_version")
        ),
    )
    op.create_table(
        "automation_versions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "blueprint",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_changed_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deployed_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deployed_by", sa.String(length=200), nullable=True),
        sa.Column("deployment_reason", sa.Text(), nullable=True),
        sa.Column(
            "deployment_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('Draft', 'Build in Progress', 'QA & Testing', 'Ready to Launch', 'Live', 'Paused', 'Archived', 'Error')",
            name=op.f("ck_automation_versions_status_valid"),
        ),
        sa.CheckConstraint("version_number > 0", name=op.f("ck_automation_versions_version_number_positive")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["projects.tenant_id", "projects.id"],
            name=op.f("fk_automation_versions_tenant_id_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automation_versions")),
        sa.UniqueConstraint(
            "project_id", "version_number", name=op.f("uq_automation_versions_project_id_version_number")
        ),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_automation_versions_tenant_id_id")),
    )
    with op.batch_alter_table("automation_versions", schema=None) as batch_op:
        batch_op.create_index("ix_automation_versions_tenant_id_project_id", ["tenant_id", "project_id"], unique=False)
        batch_op.create_index(
            "uq_automation_versions_one_live",
            ["tenant_id", "project_id"],
            unique=True,
            sqlite_where=sa.text("status = 'Live'"),
            postgresql_where=sa.text("status = 'Live'"),
        )

    op.create_table(
        "project_collaborators",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            ["projects.tenant_id", "projects.id"],
            name=op.f("fk_project_collaborators_tenant_id_project_id_projects"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_project_collaborators_user_id_users")),
        sa.PrimaryKeyConstraint("project_id", "user_id", name=op.f("pk_project_collaborators")),
    )
    op.create_table(
        "workflow_executions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_definition_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("started_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_workflow_executions_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_definition_id"],
            ["workflow_definitions.tenant_id", "workflow_definitions.id"],
            name=op.f("fk_workflow_executions_tenant_id_workflow_definition_id_workflow_definitions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_executions")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_workflow_executions_tenant_id_id")),
    )
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.create_index("ix_workflow_executions_tenant_id_status", ["tenant_id", "status"], unique=False)

    op.create_table(
        "workflow_steps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_definition_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('action', 'approval', 'batch_job')", name=op.f("ck_workflow_steps_kind_valid")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_definition_id"],
            ["workflow_definitions.tenant_id", "workflow_definitions.id"],
            name=op.f("fk_workflow_steps_tenant_id_workflow_definition_id_workflow_definitions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_steps")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_workflow_steps_tenant_id_id")),
        sa.UniqueConstraint(
            "workflow_definition_id",
            "position",
            name=op.f("uq_workflow_steps_workflow_definition_id_position"),
        ),
    )
    op.create_table(
        "hitl_approvals",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_execution_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_step_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "approvers",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("timeout_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("default_decision", sa.String(length=8), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_comment", sa.Text(), nullable=True),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "default_decision IN ('approve', 'reject')", name=op.f("ck_hitl_approvals_default_decision_valid")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'timed_out')",
            name=op.f("ck_hitl_approvals_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_execution_id"],
            ["workflow_executions.tenant_id", "workflow_executions.id"],
            name=op.f("fk_hitl_approvals_tenant_id_workflow_execution_id_workflow_executions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "workflow_step_id"],
            ["workflow_steps.tenant_id", "workflow_steps.id"],
            name=op.f("fk_hitl_approvals_tenant_id_workflow_step_id_workflow_steps"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hitl_approvals")),
        sa.UniqueConstraint(
            "workflow_execution_id",
            "workflow_step_id",
            name=op.f("uq_hitl_approvals_workflow_execution_id_workflow_step_id"),
        ),
    )
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_hitl_approvals_pending_timeout",
            ["timeout_at"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index("ix_hitl_approvals_tenant_id_status", ["tenant_id", "status"], unique=False)

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("automation_version_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", domain.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'in_progress', 'blocked', 'complete')", name=op.f("ck_tasks_status_valid")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
            name=op.f("fk_tasks_tenant_id_automation_version_id_automation_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tasks_tenant_id_automation_version_id", ["tenant_id", "automation_version_id"], unique=False
        )

    op.create_table(
        "workflow_bindings",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("automation_version_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("wrk_workflow_id", sa.String(length=200), nullable=True),
        sa.Column("wrk_workflow_url", sa.String(length=1000), nullable=True),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", domain.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'inactive', 'error')",
            name=op.f("ck_workflow_bindings_status_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "automation_version_id"],
            ["automation_versions.tenant_id", "automation_versions.id"],
            name=op.f("fk_workflow_bindings_tenant_id_automation_version_id_automation_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_bindings")),
        sa.UniqueConstraint("automation_version_id", name=op.f("uq_workflow_bindings_automation_version_id")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_workflow_bindings_tenant_id_id")),
    )
    with op.batch_alter_table("workflow_bindings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflow_bindings_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workflow_bindings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflow_bindings_tenant_id"))

    op.drop_table("workflow_bindings")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_tenant_id_automation_version_id")

    op.drop_table("tasks")
    with op.batch_alter_table("hitl_approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_hitl_approvals_tenant_id_status")
        batch_op.drop_index(
            "ix_hitl_approvals_pending_timeout",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.drop_table("hitl_approvals")
    op.drop_table("workflow_steps")
    with op.batch_alter_table("workflow_executions", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_executions_tenant_id_status")

    op.drop_table("workflow_executions")
    op.drop_table("project_collaborators")
    with op.batch_alter_table("automation_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_automation_versions_one_live",
            sqlite_where=sa.text("status = 'Live'"),
            postgresql_where=sa.text("status = 'Live'"),
        )
        batch_op.drop_index("ix_automation_versions_tenant_id_project_id")

    op.drop_table("automation_versions")
    op.drop_table("workflow_definitions")
    with op.batch_alter_table("trigger_queue", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_trigger_queue_live_dedup_key",
            sqlite_where=sa.text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
            postgresql_where=sa.text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
        )
        batch_op.drop_index(
            "ix_trigger_queue_launched",
            sqlite_where=sa.text("state = 'launched'"),
            postgresql_where=sa.text("state = 'launched'"),
        )
        batch_op.drop_index("ix_trigger_queue_finished_at")
        batch_op.drop_index(
            "ix_trigger_queue_claimed_lease",
            sqlite_where=sa.text("state = 'claimed'"),
            postgresql_where=sa.text("state = 'claimed'"),
        )
        batch_op.drop_index(
            "ix_trigger_queue_available",
            sqlite_where=sa.text("state = 'available'"),
            postgresql_where=sa.text("state = 'available'"),
        )

    op.drop_table("trigger_queue")
    op.drop_table("tenant_memberships")
    op.drop_table("sync_progress")
    op.drop_table("repo_builds")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_tenant_id"))

    op.drop_table("projects")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_tenant_id_recipient")
        batch_op.drop_index(
            "ix_notifications_pending",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )

    op.drop_table("notifications")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("audit_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_logs_tenant_id_created_at")
        batch_op.drop_index("ix_audit_logs_entity")

    op.drop_table("audit_logs")
    op.drop_table("webhook_deliveries")
    op.drop_table("users")
    op.drop_table("tenants")
    op.drop_table("release_builds")
