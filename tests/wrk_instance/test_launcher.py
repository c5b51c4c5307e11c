"""The warm run launcher (wrk_instance/launcher.py) against a real instance: runs start from its
fork server and run through Dagster's own `execute_run`, terminate cancels them, worker health is seen,
the fork server follows code changes, and the preload covers what a worker imports. These tests use
Dagster internals on purpose: they fail when a Dagster upgrade changes what the launcher relies on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test, instance_for_test

from tests.wrk_instance import launcher_jobs
from wrk_instance import launcher as warm

ROOT = Path(__file__).resolve().parents[2]
# Generous: a guard against hanging on a broken launcher, not a speed check (speed: bench/startup.py).
PATIENCE_S = 600


@pytest.fixture
def instance(tmp_path):
    overrides = {
        "run_launcher": {
            "module": "wrk_instance.launcher",
            "class": "WarmRunLauncher",
            # The code location's import is not needed by the test jobs.
            "config": {"preload_modules": ["wrk_instance.preload"]},
        }
    }
    with instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        yield instance


def _launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> dg.DagsterRun:
    origin = dg.reconstructable(getattr(launcher_jobs, job.name)).get_python_origin()
    run = create_run_for_test(
        instance,
        job_name=job.name,
        job_snapshot=job.get_job_snapshot(),
        job_code_origin=origin,
        tags={**job.tags, "wrk/queue_id": "7"},
    )
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    return run


def _wait(instance: dg.DagsterInstance, run_id: str, statuses: set[dg.DagsterRunStatus]) -> dg.DagsterRun:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.status in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}")


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.message or r.user_message for r in instance.all_logs(run_id)]


def test_a_run_starts_from_the_fork_server_and_runs_through_dagsters_execute_run(instance):
    assert isinstance(instance.run_launcher, warm.WarmRunLauncher)
    run = _launch(instance, launcher_jobs.quick)
    done = _wait(instance, run.run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert done.status == dg.DagsterRunStatus.SUCCESS
    pid = int(done.tags[warm.PID_TAG])
    assert pid != os.getpid()
    # The run is SUCCESS before its worker process has quite exited (the worker writes its "exited"
    # event after the run's last one): wait for the process to go before reading its logs.
    deadline = time.monotonic() + PATIENCE_S
    while warm.process_start_ticks(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.run_launcher.check_run_worker_health(done).status == warm.WorkerStatus.FAILED  # gone now
    messages = _messages(instance, run.run_id)
    # Dagster's execute_run body ran in the forked worker, with its logs and the job's own tags.
    assert f"Started process for run (pid: {pid})." in messages
    assert f"Process for run exited (pid: {pid})." in messages
    assert "hello from a warm run worker" in messages
    assert done.tags["wrk/flow"] == "launcher-test" and done.tags["wrk/queue_id"] == "7"  # run tags kept


def test_the_workers_tags_are_hidden_from_the_ui_and_read_by_the_launcher(instance):
    """The worker's pid, start and host tags are Dagster's hidden kind (the webserver's GraphQL drops
    them from a run's tags and from the run list's tag filter); the launcher still finds them."""
    from dagster._core.storage.tags import TagType, get_tag_type

    run = _launch(instance, launcher_jobs.slow)
    started = _wait(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    worker_tags = {warm.PID_TAG, warm.STARTED_TAG, warm.HOST_TAG}
    assert worker_tags <= set(started.tags)
    assert {get_tag_type(key) for key in worker_tags} == {TagType.HIDDEN}
    assert instance.run_launcher.check_run_worker_health(started).status == warm.WorkerStatus.RUNNING
    assert instance.run_launcher.terminate(run.run_id)
    _wait(instance, run.run_id, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE})


def test_terminate_interrupts_the_worker_and_the_run_ends_canceled(instance):
    run = _launch(instance, launcher_jobs.slow)
    started = _wait(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    health = instance.run_launcher.check_run_worker_health(started)
    assert health.status == warm.WorkerStatus.RUNNING
    assert health.run_worker_id == started.tags[warm.PID_TAG]
    # After STARTED the op may still be starting; terminate works in either case.
    assert instance.run_launcher.terminate(run.run_id)
    ended = _wait(instance, run.run_id, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE})
    assert ended.status == dg.DagsterRunStatus.CANCELED
    assert not instance.run_launcher.terminate(run.run_id)  # finished: nothing to do


def test_a_worker_that_died_is_reported_failed_so_run_monitoring_fails_the_run(instance):
    run = _launch(instance, launcher_jobs.slow)
    started = _wait(instance, run.run_id, {dg.DagsterRunStatus.STARTED})
    pid = int(started.tags[warm.PID_TAG])
    os.kill(pid, 9)
    deadline = time.monotonic() + PATIENCE_S
    while warm.process_start_ticks(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    health = instance.run_launcher.check_run_worker_health(started)
    assert health.status == warm.WorkerStatus.FAILED
    # A pid now used by another process is not the worker: its start time differs.
    reused = started.with_tags({**started.tags, warm.PID_TAG: str(os.getpid())})
    assert instance.run_launcher.check_run_worker_health(reused).status == warm.WorkerStatus.FAILED
    # Unknown, not failed, for a run this launcher did not start (no pid) or started elsewhere.
    no_pid = started.with_tags({k: v for k, v in started.tags.items() if k != warm.PID_TAG})
    assert instance.run_launcher.check_run_worker_health(no_pid).status == warm.WorkerStatus.UNKNOWN
    elsewhere = started.with_tags({**started.tags, warm.HOST_TAG: "another-host"})
    assert instance.run_launcher.check_run_worker_health(elsewhere).status == warm.WorkerStatus.UNKNOWN


def test_the_fork_server_restarts_when_the_code_changes(instance, monkeypatch):
    first = _launch(instance, launcher_jobs.quick)
    _wait(instance, first.run_id, {dg.DagsterRunStatus.SUCCESS})
    launcher = instance.run_launcher
    before = launcher.restarts
    stamp = warm.code_stamp()
    monkeypatch.setattr(warm, "code_stamp", lambda: (stamp[0] + 1, stamp[1]))
    second = _launch(instance, launcher_jobs.quick)
    assert _wait(instance, second.run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}).status == (
        dg.DagsterRunStatus.SUCCESS
    )
    assert launcher.restarts == before + 1
    third = _launch(instance, launcher_jobs.quick)  # unchanged since: the same server
    _wait(instance, third.run_id, {dg.DagsterRunStatus.SUCCESS})
    assert launcher.restarts == before + 1


def test_code_stamp_changes_when_a_project_file_changes(tmp_path):
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "a.py"
    module.write_text("x = 1\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "ignored.py").write_text("")
    first = warm.code_stamp(tmp_path)
    assert first[1] == 1
    os.utime(module, ns=(first[0] + 10**9, first[0] + 10**9))
    assert warm.code_stamp(tmp_path) != first
    (tmp_path / "pkg" / "b.py").write_text("")
    assert warm.code_stamp(tmp_path)[1] == 2


def test_code_stamp_follows_the_data_files_the_code_location_reads(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    graph = tmp_path / "pkg" / "release_graph.yaml"
    graph.write_text("repositories: {}\n")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"")
    first = warm.code_stamp(tmp_path)
    assert first[1] == 2
    os.utime(graph, ns=(first[0] + 10**9, first[0] + 10**9))
    assert warm.code_stamp(tmp_path) != first


def test_the_fork_server_restarts_when_the_release_graph_yaml_changes(instance):
    # The code location reads orchestration_defs/release_graph.yaml when it loads: a fork server that
    # imported it must not fork runs with the old graph after an edit.
    first = _launch(instance, launcher_jobs.quick)
    _wait(instance, first.run_id, {dg.DagsterRunStatus.SUCCESS})
    launcher = instance.run_launcher
    before = launcher.restarts
    graph = ROOT / "orchestration_defs" / "release_graph.yaml"
    stat = graph.stat()
    edited = max(time.time_ns(), warm.code_stamp()[0] + 10**9)
    try:
        os.utime(graph, ns=(stat.st_atime_ns, edited))  # as an editor's save would
        second = _launch(instance, launcher_jobs.quick)
        _wait(instance, second.run_id, {dg.DagsterRunStatus.SUCCESS})
        assert launcher.restarts == before + 1
    finally:
        os.utime(graph, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_preload_covers_what_a_worker_imports_to_open_the_instance(tmp_path):
    """After wrk_instance.preload, opening the instance from its ref and writing the first event
    import no further Dagster storage module (they cost ~2 s per worker when they are not preloaded)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    script = f"""
import sys
import wrk_instance.preload as preload
assert preload.warm() == [], preload.warm()
import dagster as dg
from dagster._core.instance.ref import InstanceRef
before = set(sys.modules)
instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir({str(home)!r}))
instance.run_launcher, instance.run_coordinator
run = instance.create_run_for_job(dg.GraphDefinition("x", node_defs=[]).to_job())
instance.report_engine_event("first", run)
print("\\n".join(sorted(m for m in set(sys.modules) - before if m.startswith(("dagster", "sqlalchemy", "alembic")))))
"""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_the_instance_configs_use_the_warm_launcher():
    for name in ("dagster.yaml", "dagster.postgres.yaml"):
        text = (ROOT / name).read_text()
        assert "module: wrk_instance.launcher" in text and "class: WarmRunLauncher" in text, name


def test_the_sensor_loop_setting_reaches_the_loop_dagster_runs(monkeypatch):
    import inspect

    from dagster._daemon import sensor

    # The loop sleeps MIN_INTERVAL_LOOP_TIME minus its own duration, reading the module's value each pass.
    assert "MIN_INTERVAL_LOOP_TIME - loop_duration" in inspect.getsource(sensor.execute_sensor_iteration_loop)
    monkeypatch.setattr(sensor, "MIN_INTERVAL_LOOP_TIME", sensor.MIN_INTERVAL_LOOP_TIME)
    warm.set_sensor_loop_seconds(1)
    assert sensor.MIN_INTERVAL_LOOP_TIME == 1
    warm.set_sensor_loop_seconds(None)  # not configured: Dagster's own value stays
    assert sensor.MIN_INTERVAL_LOOP_TIME == 1
    launcher = warm.WarmRunLauncher.from_config_value(None, {"sensor_loop_seconds": 2})  # type: ignore[arg-type]
    assert launcher._sensor_loop_s == 2


def test_single_step_jobs_run_their_step_in_the_run_worker():
    """A one-step job under the default multiprocess executor starts a second interpreter for its step
    (seconds here) for nothing; only the release job, whose steps run side by side, forks step workers,
    and from a preloaded fork server."""
    from orchestration_defs.definitions import defs

    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        if job.name.startswith("__"):
            continue
        if job.name == "release_build":
            assert job.executor_def.name == "multiprocess"
            continue
        steps = len(job.graph.node_defs)
        if steps == 1:
            assert job.executor_def.name == "in_process", job.name


def test_a_run_worker_from_the_fork_server_runs_steps_in_a_fork_server_of_its_own(instance):
    run = _launch(instance, launcher_jobs.forked_steps)
    done = _wait(instance, run.run_id, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert done.status == dg.DagsterRunStatus.SUCCESS
    worker = int(done.tags[warm.PID_TAG])
    step_pids = {
        r.dagster_event.pid
        for r in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if r.dagster_event is not None
    }
    assert len(step_pids) == 2 and worker not in step_pids
