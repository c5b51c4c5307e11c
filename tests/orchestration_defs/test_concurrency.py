"""One release per tag, one build per automation version at a time, and per-kind and per-tenant limits, on
the shipped instance configs: the run coordinator tags every submitted run from its config (so UI launches
count too), and Dagster's tag concurrency limits keep a run queued while its tag, version, kind or tenant
is at its limit. (tests/e2e/test_queue_e2e.py and tests/e2e/test_tenant_limits_e2e.py prove the same
through a real daemon.)"""

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._utils.tags import TagConcurrencyLimitsCounter
from sqlalchemy import create_engine, text

from domain.core import models
from domain.core.settings import Settings, get_settings
from domain.core.store import transaction
from orchestration_defs.build import build_automation_version
from orchestration_defs.concurrency import FlowRunCoordinator, concurrency_tags, run_limit_tags
from orchestration_defs.release import release_build
from tests.domain import factories

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["dagster.yaml", "dagster.postgres.yaml"])
def instance(request, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / request.param).read_text())
    admin = db_name = None
    if request.param == "dagster.postgres.yaml":
        admin_url = os.environ.get("TEST_POSTGRES_URL")
        if not admin_url:
            pytest.skip("TEST_POSTGRES_URL is not set (run `make test`)")
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        db_name = f"dagster_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {db_name}"))
        pg = admin.url.set(database=db_name)
        for name, value in {"HOST": pg.host, "PORT": str(pg.port), "USERNAME": pg.username, "DB": db_name}.items():
            monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {db_name} WITH (FORCE)"))
        admin.dispose()


def _build_config(version: str, tenant: str = "t") -> dict:
    payload = {"tenant_id": tenant, "project_id": "p", "automation_version_id": version, "workflow_binding_id": "b"}
    return {"ops": {"load": {"config": payload}, "create": {"config": payload}}}


def _release_config(tag: str) -> dict:
    return {"ops": {"start_release": {"config": {"tag": tag}}}}


def _submit(instance, job, run_config) -> dg.DagsterRun:
    """A launch as the UI makes it: a run with only the job's own tags, handed to the run coordinator."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name="wrk"), repository_name="__repository__"
        ),
        job_name=job.name,
    )
    run = instance.create_run_for_job(
        job, run_config=run_config, status=dg.DagsterRunStatus.NOT_STARTED, remote_job_origin=origin
    )
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]


def test_runs_are_tagged_when_submitted_and_a_second_one_for_the_same_tag_or_version_waits(instance):
    assert isinstance(instance.run_coordinator, FlowRunCoordinator)
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    per_value = {(lim["key"], lim["limit"]) for lim in limits if isinstance(lim.get("value"), dict)}
    assert per_value == {("wrk/release_tag", 1), ("wrk/automation_version_id", 1), ("wrk/tenant_id", 4)}
    per_kind = {lim["value"]: lim["limit"] for lim in limits if lim["key"] == "wrk/flow"}
    # phases: PHASE_WORKERS and a successor for each (orchestration_defs/phases.py: a worker retiring)
    phases = 2 * Settings.model_fields["phase_workers"].default
    assert per_kind == {"release": 2, "build": 6, "workflow": 6, "phase": phases, "batch": 4}
    first_build = _submit(instance, build_automation_version, _build_config("v1"))
    first_release = _submit(instance, release_build, _release_config("app/v2.0.0"))
    assert first_build.status == dg.DagsterRunStatus.QUEUED
    assert first_build.tags["wrk/automation_version_id"] == "v1"
    assert first_release.tags["wrk/release_tag"] == "app/v2.0.0"
    # what the daemon's dequeuer decides while both are in progress
    in_progress = TagConcurrencyLimitsCounter(limits, [first_build, first_release])
    same_version = _submit(instance, build_automation_version, _build_config("v1"))
    other_version = _submit(instance, build_automation_version, _build_config("v2"))
    same_tag = _submit(instance, release_build, _release_config("app/v2.0.0"))
    other_tag = _submit(instance, release_build, _release_config("v2.0.1"))
    assert in_progress.is_blocked(same_version) and in_progress.is_blocked(same_tag)
    assert not in_progress.is_blocked(other_version) and not in_progress.is_blocked(other_tag)


def test_concurrency_tags_come_from_the_run_config_of_the_limited_flows_only():
    build, release = build_automation_version.name, release_build.name
    assert concurrency_tags(build, _build_config("v9")) == {"wrk/automation_version_id": "v9"}
    assert concurrency_tags(release, _release_config("v1")) == {"wrk/release_tag": "v1"}
    assert concurrency_tags(release, {}) == {}
    assert concurrency_tags("queue_sweeper", _build_config("v9")) == {}


def test_every_flows_runs_carry_their_kind_and_tenant_runs_their_tenant_from_the_run_config():
    assert run_limit_tags("build_automation_version", _build_config("v9")) == {
        "wrk/automation_version_id": "v9",
        "wrk/flow": "build",
        "wrk/tenant_id": "t",
    }
    workflow = {"ops": {"run_workflow_execution": {"config": {"workflow_execution_id": "e1", "tenant_id": "t2"}}}}
    assert run_limit_tags("workflow_execution", workflow) == {"wrk/flow": "workflow", "wrk/tenant_id": "t2"}

    # A phase worker counts against its kind only (it takes every tenant's triggers): at a tenant limit it
    # would wait queued, and the phase sensor, which counts queued workers, would stop every tenant's phases.
    assert run_limit_tags("phase_worker", {}) == {"wrk/flow": "phase"}
    # platform-wide work: no tenant, its kind only
    assert run_limit_tags("release_build", _release_config("v1")) == {"wrk/release_tag": "v1", "wrk/flow": "release"}
    assert run_limit_tags("outcome_sync_job", {}) == {"wrk/flow": "batch"}
    # a batch asset materialized from the asset graph (Dagster's own asset job) is batch work too
    assert run_limit_tags("__ASSET_JOB", {}, ["outcome_sync"]) == {"wrk/flow": "batch"}
    assert run_limit_tags("__ASSET_JOB", {}, []) == {"wrk/flow": "housekeeping"}
    assert run_limit_tags("queue_sweeper", {}) == {"wrk/flow": "housekeeping"}


def test_a_ui_launch_naming_no_tenant_is_tagged_with_the_tenant_the_store_holds(engine, database_url, monkeypatch):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        project = factories.project(session, tenant.id)
        version = models.AutomationVersion(tenant_id=tenant.id, project_id=project.id, version_number=1, blueprint={})
        session.add(version)
        session.flush()
        tenant_id, version_id = tenant.id, version.id
        execution_id = factories.workflow_execution(session, tenant.id).id
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        ui_launch = {"ops": {"load": {"config": {"automation_version_id": version_id}}}}
        assert run_limit_tags("build_automation_version", ui_launch)["wrk/tenant_id"] == tenant_id
        unknown = {"ops": {"load": {"config": {"automation_version_id": "no-such-version"}}}}
        assert "wrk/tenant_id" not in run_limit_tags("build_automation_version", unknown)
        workflow = {"ops": {"run_workflow_execution": {"config": {"workflow_execution_id": execution_id}}}}
        assert run_limit_tags("workflow_execution", workflow)["wrk/tenant_id"] == tenant_id
    finally:
        get_settings.cache_clear()


def test_the_tenant_limit_comes_from_tenant_max_concurrent_runs_or_the_coordinators_own_config(tmp_path, monkeypatch):
    def tenant_limits(extra: dict) -> list:
        home = tmp_path / uuid.uuid4().hex
        home.mkdir()
        config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        config["run_coordinator"]["config"] |= extra
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        return [lim["limit"] for lim in limits if lim["key"] == "wrk/tenant_id"]

    monkeypatch.setenv("TENANT_MAX_CONCURRENT_RUNS", "3")
    get_settings.cache_clear()
    try:
        assert tenant_limits({}) == [3]
        assert tenant_limits({"tenant_max_concurrent_runs": 1}) == [1]
        monkeypatch.setenv("WRK_TENANT_LIMIT", "5")
        assert tenant_limits({"tenant_max_concurrent_runs": {"env": "WRK_TENANT_LIMIT"}}) == [5]
        assert tenant_limits({"tenant_max_concurrent_runs": -1}) == []
        # 0 would keep every tenant's runs queued for ever: refused, as in the settings
        with pytest.raises(ValueError, match="TENANT_MAX_CONCURRENT_RUNS"):
            tenant_limits({"tenant_max_concurrent_runs": 0})
        # The instance loads with an unrelated setting broken (the coordinator reads its one variable)
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.delenv("JWT_SECRET", raising=False)
        get_settings.cache_clear()
        assert tenant_limits({}) == [3]
    finally:
        get_settings.cache_clear()


def test_one_tenants_runs_wait_for_its_limit_while_another_tenants_run_may_start(instance):
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    busy = [_submit(instance, build_automation_version, _build_config(f"v{i}", tenant="a")) for i in (1, 2, 3, 4)]
    in_progress = TagConcurrencyLimitsCounter(limits, busy)  # four of tenant a in progress (the default limit)
    assert in_progress.is_blocked(_submit(instance, build_automation_version, _build_config("v5", tenant="a")))
    assert not in_progress.is_blocked(_submit(instance, build_automation_version, _build_config("v6", tenant="b")))


def test_a_batch_asset_launched_from_the_asset_graph_counts_as_batch_work(instance):
    from orchestration_defs.definitions import defs

    asset_job = defs.get_repository_def().get_implicit_global_asset_job_def()
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name="wrk"), repository_name="__repository__"
        ),
        job_name=asset_job.name,
    )
    run = instance.create_run_for_job(
        asset_job,
        asset_selection=frozenset({dg.AssetKey("outcome_sync")}),
        status=dg.DagsterRunStatus.NOT_STARTED,
        remote_job_origin=origin,
    )
    submitted = instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
    assert submitted.tags["wrk/flow"] == "batch"


def test_housekeeping_runs_are_dequeued_before_a_burst_and_keep_a_priority_set_at_launch(instance):
    """A sweeper queued behind a burst of builds gets the next free slot (Dagster's run priority)."""
    from orchestration_defs.definitions import defs

    sweeper = defs.get_job_def("queue_sweeper")
    burst = [_submit(instance, build_automation_version, _build_config(f"v{i}", tenant="a")) for i in (1, 2)]
    swept = _submit(instance, sweeper, {})
    assert swept.tags["wrk/flow"] == "housekeeping" and swept.tags["dagster/priority"] == "1"
    assert all("dagster/priority" not in run.tags for run in burst)
    dequeue_order = QueuedRunCoordinatorDaemon(interval_seconds=1)._priority_sort([*burst, swept])
    assert dequeue_order[0].run_id == swept.run_id
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name="wrk"), repository_name="__repository__"
        ),
        job_name=sweeper.name,
    )
    own = instance.create_run_for_job(
        sweeper, status=dg.DagsterRunStatus.NOT_STARTED, remote_job_origin=origin, tags={"dagster/priority": "-5"}
    )
    kept = instance.run_coordinator.submit_run(SubmitRunContext(own, workspace=None))  # type: ignore[arg-type]
    assert kept.tags["dagster/priority"] == "-5"
