from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from domain import migrate
from domain.models import Base


def _tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrations_upgrade_downgrade_and_upgrade_again(databases):
    engine = databases.empty()
    migrate.upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    assert migrate.at_head(engine)
    migrate.downgrade(engine, "base")
    assert _tables(engine) == set()
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert _tables(engine) == set(Base.metadata.tables)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_models_match_the_migrations(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_partial_unique_index_for_one_live_version_exists(engine):
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("automation_versions")}
    one_live = indexes["uq_automation_versions_one_live"]
    assert one_live["unique"] and one_live["column_names"] == ["tenant_id", "project_id"]


def test_every_tenant_data_table_carries_tenant_id():
    platform_wide = {"tenants", "users", "release_builds", "repo_builds", "webhook_deliveries", "outbound_messages"}
    for name, table in Base.metadata.tables.items():
        if name not in platform_wide:
            assert "tenant_id" in table.columns, name
