"""One release per tag, one build per automation version at a time, on the shipped instance configs: the
run coordinator tags every submitted run from its config (so UI launches count too), and Dagster's tag
concurrency limits keep a second run for the same tag or version queued while the first is in progress.
(tests/e2e/test_queue_e2e.py proves the same through a real daemon.)"""

import os
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._utils.tags import TagConcurrencyLimitsCounter
from sqlalchemy import create_engine, text

from orchestration_defs.build import build_automation_version
from orchestration_defs.concurrency import FlowRunCoordinator, concurrency_tags
from orchestration_defs.release import release_build

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


def _build_config(version: str) -> dict:
    payload = {"tenant_id": "t", "project_id": "p", "automation_version_id": version, "workflow_binding_id": "b"}
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
    assert {(lim["key"], lim["limit"], lim["value"]["applyLimitPerUniqueValue"]) for lim in limits} == {
        ("wrk/release_tag", 1, True),
        ("wrk/automation_version_id", 1, True),
    }
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
