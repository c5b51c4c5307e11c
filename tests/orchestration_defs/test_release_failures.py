"""Release builds end in a state that says why: every failure path, tags as file names, re-dispatch backoff."""

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from domain.core.models import AuditLog, RepoBuild
from domain.core.store import transaction
from domain.release import release as rel
from resources.retry import RetryPolicy
from tests.orchestration_defs.test_release import _audit, _dispatches, _release, _release_error, _repo_states


def test_a_poll_timeout_fails_the_repository_skips_its_dependents_and_fails_the_release(
    engine, database_url, sandbox, flow_env, instance
):
    sandbox.configure_github(default_duration_s=0.05, repos={"bllvm-protocol": {"duration_s": 600}})
    result = _release(database_url, instance, tag="v7.0.0", build_timeout_s=0.5)
    assert not result.success
    states = _repo_states(engine, "v7.0.0")
    assert states["_release"][0] == "failed"
    assert states["bllvm-protocol"][0] == "failed"
    for dependent in ("bllvm-node", "bllvm-sdk", "bllvm", "governance-app"):
        assert states[dependent][0] == "skipped", dependent
    assert states["bllvm-consensus"][0] == states["commons"][0] == "succeeded"
    assert "did not complete within" in _release_error(engine, "v7.0.0")


def test_a_github_error_fails_the_repository_and_the_release(engine, database_url, sandbox, flow_env, instance):
    sandbox.configure_github(default_duration_s=0.05)
    sandbox.fault(
        "POST",
        "/github/repos/bllvm/commons/actions/workflows/build.yml/dispatches",
        count=5,
        status=403,
        body={"message": "Resource not accessible by integration"},
    )
    result = _release(database_url, instance, tag="v7.1.0", repositories=["commons"])
    assert not result.success
    states = _repo_states(engine, "v7.1.0")
    assert states["commons"][0] == "failed" and states["_release"][0] == "failed"
    assert "PermanentError" in _release_error(engine, "v7.1.0")


def test_a_publish_failure_fails_the_release_with_the_reason(engine, database_url, sandbox, flow_env, instance):
    sandbox.configure_github(default_duration_s=0.05)
    sandbox.fault("POST", "/github/repos/bllvm/bllvm/releases", count=1, status=422, body={"message": "nope"})
    result = _release(database_url, instance, tag="v7.2.0", repositories=["commons"])
    assert not result.success
    states = _repo_states(engine, "v7.2.0")
    assert states == {"commons": ("succeeded", 1), "_release": ("failed", 0)}
    assert _release_error(engine, "v7.2.0").startswith("publish: ValidationRejected")
    # A resume publishes without building again.
    before = len(_dispatches(sandbox))
    assert _release(database_url, instance, tag="v7.2.0", repositories=["commons"]).success
    assert len(_dispatches(sandbox)) == before
    assert _repo_states(engine, "v7.2.0")["_release"][0] == "succeeded"
    assert ("_release", "failed", "running") in _audit(engine, "v7.2.0")


def test_a_package_failure_fails_the_release(engine, database_url, sandbox, flow_env, instance, monkeypatch):
    def broken(*_args, **_kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(rel, "package", broken)
    sandbox.configure_github(default_duration_s=0.05)
    assert not _release(database_url, instance, tag="v7.3.0", repositories=["commons"]).success
    assert _repo_states(engine, "v7.3.0")["_release"][0] == "failed"
    assert _release_error(engine, "v7.3.0") == "package: OSError: No space left on device"


def test_a_failed_build_is_dispatched_again_after_the_policys_backoff(
    engine, database_url, sandbox, flow_env, instance, monkeypatch
):
    waits: list[int] = []

    def backoff(self, attempt: int) -> float:
        waits.append(attempt)
        return 0.4

    monkeypatch.setattr(RetryPolicy, "backoff", backoff)
    sandbox.configure_github(default_duration_s=0.05, repos={"commons": {"conclusions": ["failure", "success"]}})
    assert _release(database_url, instance, tag="v8.0.0", repositories=["commons"]).success
    assert _repo_states(engine, "v8.0.0")["commons"] == ("succeeded", 2)
    assert 1 in waits  # the re-dispatch asked the one policy for attempt 1's backoff
    with transaction(engine) as session:
        [noted] = session.scalars(select(AuditLog).where(AuditLog.action == "redispatch_backoff")).all()
    assert noted.details["wait_s"] == 0.4 and noted.details["attempt"] == 2
    dispatches = sandbox.calls("POST", r"/github/repos/bllvm/commons/actions/workflows/.*/dispatches")
    failed_seen = max(
        c["at"]
        for c in sandbox.calls("GET", r"/github/repos/bllvm/commons/actions/runs/\d+")
        if c["at"] < dispatches[1]["at"]
    )
    assert dispatches[1]["at"] - failed_seen >= 0.4


def test_a_tag_with_a_slash_builds_and_publishes_under_release_dir(
    engine, database_url, sandbox, flow_env, instance, tmp_path
):
    sandbox.configure_github(default_duration_s=0.05)
    assert _release(database_url, instance, tag="app/v2.0.0", repositories=["commons"]).success
    release = sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/app%2Fv2.0.0").json()
    assert release["tag_name"] == "app/v2.0.0"
    assert "release-app-v2.0.0.tar.gz" in {a["name"] for a in release["assets"]}
    root = Path(flow_env.release_dir).resolve()
    written = [p for p in root.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(root / "app%2Fv2.0.0") for p in written)


@pytest.mark.parametrize("tag", ["../../etc", "v1..0", "-rf", "a b", "v1.lock", ".hidden"])
def test_an_illegal_tag_is_refused_in_the_launch_config(engine, database_url, sandbox, flow_env, instance, tag):
    # Dagster validates a Config model when the step starts: start_release fails, nothing else runs.
    result = _release(database_url, instance, tag=tag)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "start_release"
    assert "tag" in failure.step_failure_data.error.to_string()
    assert _dispatches(sandbox) == []
    assert not Path(flow_env.release_dir).exists() or not any(Path(flow_env.release_dir).iterdir())
    with transaction(engine) as session:
        assert session.scalars(select(RepoBuild)).all() == []


@pytest.mark.parametrize("how", ["failure", "canceled"])
def test_a_release_run_that_dies_outside_its_ops_ends_its_release_failed(engine, database_url, instance, how):
    from orchestration_defs.release import release_build
    from resources.dagster_resources import DatabaseResource
    from sensors.release import release_cancel_sensor, release_failure_sensor

    run = instance.create_run_for_job(
        release_build,
        run_config={"ops": {"start_release": {"config": {"tag": "v10.0.0"}}}},
        status=dg.DagsterRunStatus.STARTED,
    )
    with transaction(engine) as session:
        release_id = rel.start_release(session, "v10.0.0", None, False, ["a", "b"], run.run_id)
        rel.begin_attempt(session, release_id, "a", attempt=1, correlation_id="c", github_run_id="1")
    # What the daemon does when the run process is killed or canceled: the event, then the sensor.
    if how == "failure":
        instance.report_run_failed(run)
        event_type, sensor = dg.DagsterEventType.RUN_FAILURE, release_failure_sensor
    else:
        instance.report_run_canceled(run)
        event_type, sensor = dg.DagsterEventType.RUN_CANCELED, release_cancel_sensor
    event = instance.get_records_for_run(run.run_id, of_type=event_type).records[-1].event_log_entry.dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
        dagster_event=event,
        resources={"database": DatabaseResource(url=database_url)},
    )
    sensor(context.for_run_failure() if how == "failure" else context)
    states = _repo_states(engine, "v10.0.0")
    assert states == {"a": ("failed", 1), "b": ("skipped", 0), "_release": ("failed", 0)}
    assert run.run_id in _release_error(engine, "v10.0.0")


def test_a_resume_after_the_working_folder_was_pruned_downloads_the_recorded_artifacts_again(
    engine, database_url, sandbox, flow_env, instance, tmp_path
):
    import shutil
    import tarfile

    sandbox.configure_github(default_duration_s=0.05)
    sandbox.fault("POST", "/github/repos/bllvm/bllvm/releases", count=1, status=422, body={"message": "nope"})
    assert not _release(database_url, instance, tag="v11.0.0", repositories=["commons"]).success
    shutil.rmtree(Path(flow_env.release_dir) / "v11.0.0")  # pruned between the failure and the resume
    dispatched = len(_dispatches(sandbox))
    assert _release(database_url, instance, tag="v11.0.0", repositories=["commons"]).success
    assert len(_dispatches(sandbox)) == dispatched  # not built again
    release = sandbox.http.get("/github/repos/bllvm/bllvm/releases/tags/v11.0.0").json()
    archive = next(a for a in release["assets"] if a["name"] == "release-v11.0.0.tar.gz")
    (tmp_path / "a.tar.gz").write_bytes(
        sandbox.http.get(archive["browser_download_url"].replace(sandbox.url, "")).content
    )
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert tar.getnames() == ["commons/commons-build.zip"]  # never an empty archive
