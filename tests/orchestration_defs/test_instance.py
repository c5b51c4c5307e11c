"""The shipped Dagster instance configs really run a job: SQLite (dagster.yaml) and PostgreSQL."""

import os
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution import compute_logs
from sqlalchemy import create_engine, text

from domain import models
from domain.store import transaction
from resources.dagster_resources import DatabaseResource
from wrk_instance.compute_logs import StepLogFiles

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


@dg.op
def say_hello() -> None:
    print("hello from the step")
    print("and a warning", file=sys.stderr)


@dg.job(executor_def=dg.in_process_executor)
def noisy() -> None:
    say_hello()


def test_a_steps_output_is_in_its_log_files_and_no_echo_process_starts(tmp_path, monkeypatch):
    """dagster.yaml's compute log manager (wrk_instance/compute_logs.py): what a step prints is
    read back as the UI reads it, from files under the instance's folder, and Dagster's echo to the
    console (a `tail` and a Python watcher per stream) is not started."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    started: list[object] = []
    real_popen = compute_logs.subprocess.Popen
    monkeypatch.setattr(compute_logs.subprocess, "Popen", lambda *a, **k: started.append(a) or real_popen(*a, **k))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.compute_log_manager, StepLogFiles)
        result = noisy.execute_in_process(instance=instance)
        assert result.success
        captured = [
            r.dagster_event.logs_captured_data
            for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
            if r.dagster_event is not None
        ]
        assert captured
        manager = instance.compute_log_manager
        data = manager.get_log_data(manager.build_log_key_for_run(result.run_id, captured[0].file_key))
        assert b"hello from the step" in (data.stdout or b"")
        assert b"and a warning" in (data.stderr or b"")
    assert list((home / "storage").rglob("*.out"))
    assert started == []
