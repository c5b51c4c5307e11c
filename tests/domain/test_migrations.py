from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from domain.core import migrate
from domain.core.models import Base
from domain.core.store import transaction
from domain.phases import phase_metrics


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
    platform_wide |= {"phase_metrics", "flow_counters"}  # /metrics' counters, summed over tenants
    for name, table in Base.metadata.tables.items():
        if name not in platform_wide:
            assert "tenant_id" in table.columns, name


def test_phase_counters_carry_on_from_the_audit_rows_written_before_them(databases):
    # 0008 made /metrics' phase counters a table kept by the writer; an upgraded store starts it from the
    # audit rows it has (latency: those whose trigger row is still kept), so no counter starts from zero.
    engine = databases.empty()
    migrate.upgrade(engine, "0007")
    enqueued = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 't1', :at)"), {"at": enqueued}
        )
        connection.execute(
            text(
                "INSERT INTO trigger_queue (id, kind, tenant_id, payload, dedup_key, state, attempts, max_attempts, "
                "available_at, created_at, updated_at, finished_at) VALUES (1, 'phase', 't1', '{}', NULL, 'done', 1, "
                "5, :at, :at, :at, :at)"
            ),
            {"at": enqueued},
        )
        for phase, outcome, duration, after in (
            (1, "completed", 0.3, 2.5),
            (1, "failed", 0.02, 1.0),
            (2, "completed", 40.0, 45.0),
        ):
            connection.execute(
                text(
                    "INSERT INTO phase_audit (tenant_id, user_id, sync_id, phase, trigger_id, attempt, outcome, "
                    "duration_s, details, started_at, finished_at) VALUES ('t1', 'u', 's', :phase, :trigger, 1, "
                    ":outcome, :duration, '{}', :at, :finished)"
                ),
                {
                    "phase": phase,
                    "trigger": 1 if phase == 1 else 99,  # 99: its trigger row pruned already
                    "outcome": outcome,
                    "duration": duration,
                    "at": enqueued,
                    "finished": enqueued + timedelta(seconds=after),
                },
            )
    migrate.upgrade(engine)
    with transaction(engine) as session:
        figures = phase_metrics.read(session)
        assert phase_metrics.fold(session) == 0  # every row there was is counted in the totals
    assert figures.transitions == {(1, "completed"): 1, (1, "failed"): 1, (2, "completed"): 1}
    durations, latencies = figures.durations, figures.latencies
    # the durations are the rows' own values inserted above (0.3 and 0.02 s; 40 s), nothing timed
    assert durations[1].count == 2 and durations[1].total == pytest.approx(0.32)
    assert durations[2].buckets[-1] == 0 and durations[2].count == 1  # 40 s: beyond the last bound
    assert latencies[1].count == 1 and latencies[1].total == pytest.approx(2.5)
    assert latencies[1].buckets[latencies[1].bounds.index(2.0)] == 0 and latencies[1].buckets[-1] == 1
    assert 2 not in latencies  # its trigger row was gone: no end-to-end figure for it


def test_consumed_event_ids_are_kept_per_tenant_across_0009_both_ways(databases):
    # Before 0009 an event id was global: another tenant's event of the same id was a "duplicate".
    engine = databases.empty()
    migrate.upgrade(engine, "0008")
    at = datetime(2026, 12, 1, tzinfo=UTC)
    insert_event = text(
        "INSERT INTO consumed_events (id, tenant_id, type, occurred_at, data, source, executions, received_at) "
        "VALUES ('evt-1', :tenant, 'shard.updated', :at, '{}', 'http', '[]', :at)"
    )
    with engine.begin() as connection:
        for tenant in ("t1", "t2"):
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:t, :t, :at)"), {"t": tenant, "at": at}
            )
        connection.execute(insert_event, {"tenant": "t1", "at": at})

    migrate.upgrade(engine)
    assert inspect(engine).get_pk_constraint("consumed_events")["constrained_columns"] == ["tenant_id", "id"]
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("workflow_executions")}
    assert ("tenant_id", "dedup_key") in uniques and ("dedup_key",) not in uniques
    with engine.begin() as connection:
        connection.execute(insert_event, {"tenant": "t2", "at": at})
        assert connection.execute(text("SELECT tenant_id FROM consumed_events ORDER BY tenant_id")).scalars().all() == [
            "t1",
            "t2",
        ]

    with pytest.raises(RuntimeError, match="several tenants"):
        migrate.downgrade(engine, "0008")
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM consumed_events WHERE tenant_id = 't2'"))
    migrate.downgrade(engine, "0008")
    assert inspect(engine).get_pk_constraint("consumed_events")["constrained_columns"] == ["id"]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT tenant_id, id FROM consumed_events")).all() == [("t1", "evt-1")]


def test_reading_the_revision_says_nothing_and_a_migration_still_says_what_it_runs(databases, caplog):
    """Every CLI command and every process's first store use reads the revision: Alembic's two lines on
    opening its context ("Context impl ...", "Will assume ...") were noise on stderr each time."""
    engine = databases.empty()
    caplog.set_level("INFO", logger="alembic.runtime.migration")
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    said = [r.getMessage() for r in caplog.records if r.name == "alembic.runtime.migration"]
    assert said and all(line.startswith("Running upgrade") for line in said)
