"""The shipped Dagster instance configs really run a job: SQLite (dagster.yaml) and PostgreSQL."""

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from domain import models
from domain.store import transaction
from resources.database import DatabaseResource

ROOT = Path(__file__).resolve().parents[2]


@dg.op
def count_tenants(context: dg.OpExecutionContext, database: DatabaseResource) -> int:
    with database.transaction() as session:
        count = session.query(models.Tenant).count()
    context.log.info(f"{count} tenants")
    return count


@dg.job(executor_def=dg.in_process_executor)
def store_probe() -> None:
    count_tenants()


@pytest.mark.parametrize("config", ["dagster.yaml", "dagster.postgres.yaml"])
def test_shipped_instance_config_runs_a_job(config, engine, database_url, tmp_path, monkeypatch):
    with transaction(engine) as session:
        session.add(models.Tenant(name="probe"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / config).read_text())
    pg = None
    if config == "dagster.postgres.yaml":
        admin_url = os.environ.get("TEST_POSTGRES_URL")
        if not admin_url:
            pytest.skip("TEST_POSTGRES_URL is not set (run `make test`)")
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        db_name = f"dagster_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {db_name}"))
        pg = admin.url.set(database=db_name)
        monkeypatch.setenv("DAGSTER_PG_HOST", pg.host)
        monkeypatch.setenv("DAGSTER_PG_PORT", str(pg.port))
        monkeypatch.setenv("DAGSTER_PG_USERNAME", pg.username)
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
        monkeypatch.setenv("DAGSTER_PG_DB", db_name)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = store_probe.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url)}
        )
        assert result.success
        assert result.output_for_node("count_tenants") == 1
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
    if pg is not None:
        with create_engine(pg.render_as_string(hide_password=False)).connect() as conn:
            runs = conn.execute(text("SELECT count(*) FROM runs WHERE run_id = :r"), {"r": result.run_id})
            assert runs.scalar() == 1
            events = conn.execute(
                text("SELECT count(*) FROM event_logs WHERE run_id = :r AND dagster_event_type = 'STEP_SUCCESS'"),
                {"r": result.run_id},
            )
            assert events.scalar() == 1
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {db_name} WITH (FORCE)"))
