"""EXECUTOR=celery: a release run's steps on two real Celery workers over the real broker.

Each test starts its own processes, as they would run on other machines: two workers (dagster-celery's
own `worker start`, each its own process group with one step process), and the run itself with
Dagster's CLI (`dagster job execute`, the run worker), all on the test's store, Dagster instance and a
RabbitMQ virtual host of its own (so tests in parallel never take each other's steps). The sandbox
plays GitHub. The store is PostgreSQL, the one processes on several machines can share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import dagster as dg
import pytest
import yaml
from sqlalchemy import select

from domain.core.models import PhaseAudit, PhaseOutcome, ReleaseBuild, RepoBuild, TriggerQueue, WorkflowExecutionStep
from domain.core.settings import get_settings
from domain.core.store import autocommit, transaction
from domain.phases import phases
from domain.queue import queue
from domain.release.release_graph import load_graph
from orchestration_defs.executors import write_worker_config
from orchestration_defs.phases import run_tags as phase_run_tags
from orchestration_defs.trigger_runs import reconcile_launched
from resources.dagster_resources import DatabaseResource
from sensors.release import release_queue_sensor
from sensors.workflows import workflow_queue_sensor
from tests.domain import factories
from tests.orchestration_defs.workflow_helpers import audit_moves, call, new_workflow, start, state
from tests.servers import BIN, ROOT, until

pytestmark = pytest.mark.xdist_group("celery")
ALL = load_graph().order
RUN_CONFIG = {"poll_initial_s": 0.1, "poll_max_s": 0.3}


class CeleryCluster:
    """Two Celery workers and the runs of one test, on one store, instance and virtual host."""

    def __init__(self, home: Path, env: dict[str, str], logs: Path) -> None:
        self.home, self.env, self.logs = home, env, logs
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.runs: list[subprocess.Popen[bytes]] = []

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        from orchestration_defs.executors import worker_command

        config = self.home / "celery-worker.yaml"
        write_worker_config(config)
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                worker_command(config, name=name),
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killing it kills its step processes, as a lost machine
            )
        self.workers[name] = proc
        until(lambda: f"{name}@" in log.read_text() and " ready." in log.read_text(), lambda: self.tail(name))
        return proc

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]

    def run_release(self, tag: str) -> subprocess.Popen[bytes]:
        return self.run_job("release_build", {"ops": {"start_release": {"config": {"tag": tag, **RUN_CONFIG}}}}, tag)

    def run_job(
        self, job: str, run_config: dict[str, Any], name: str, tags: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A run of `job` by Dagster's CLI (the run worker); its log is run-<name>.log."""
        config = self.home / f"run-{name}.yaml"
        config.write_text(yaml.safe_dump(run_config))
        with (self.logs / f"run-{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [str(BIN / "dagster"), "job", "execute", "-m", "orchestration_defs.definitions", "-a", "defs",
                 "-j", job, "-c", str(config), "--tags", json.dumps(tags or {})],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.runs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], tag: str) -> int:
        # Only a hang guard: a release of 1 s builds takes well under a minute here.
        until(lambda: proc.poll() is not None, lambda: (self.logs / f"run-{tag}.log").read_text()[-3000:])
        return proc.returncode

    def kill(self, name: str) -> None:
        """SIGKILL the worker's whole group (the worker and its step process): a machine lost mid-step."""
        proc = self.workers[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in [*self.runs, *self.workers.values()]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _vhost_url(broker_url: str, vhost: str) -> str:
    return urlsplit(broker_url)._replace(path="/" + quote(vhost, safe="")).geturl()


@pytest.fixture
def celery(
    backend, database_url, sandbox, flow_env, rabbitmq_url, rabbitmq_ctl, tmp_path, monkeypatch
) -> Iterator[CeleryCluster]:
    if backend != "postgresql":
        pytest.skip("workers on other machines share a PostgreSQL store; SQLite is covered in process")
    vhost = f"wrk-test-{uuid.uuid4().hex[:8]}"
    for argv in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run([rabbitmq_ctl, *argv], check=True, capture_output=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)):  # its storage made once, before processes open it
        pass
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery`
        "DAGSTER_HOME": str(home),
        "EXECUTOR": "celery",
        "CELERY_BROKER_URL": _vhost_url(rabbitmq_url, vhost),
        "CELERY_WORKER_CONCURRENCY": "1",  # one step per worker: two ready steps go to two workers
    }
    monkeypatch.setenv("CELERY_BROKER_URL", env["CELERY_BROKER_URL"])  # for write_worker_config here
    get_settings.cache_clear()
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = CeleryCluster(home, env, logs)
    try:
        yield cluster
    finally:
        cluster.stop()
        subprocess.run([rabbitmq_ctl, "delete_vhost", vhost], capture_output=True)


def _events(home: Path, *types: dg.DagsterEventType) -> tuple[str, list[dg.EventLogEntry]]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        return run.run_id, list(instance.all_logs(run.run_id, of_type=set(types)))


def _step_pids(home: Path, step_key: str | None = None) -> list[tuple[str, int]]:
    _, events = _events(home, dg.DagsterEventType.STEP_START)
    return [
        (e.step_key or "", e.dagster_event.pid)
        for e in events
        if e.dagster_event is not None and e.dagster_event.pid is not None and step_key in (None, e.step_key)
    ]


def _run_pid(home: Path) -> int | None:
    _, events = _events(home, dg.DagsterEventType.RUN_START)
    return events[0].dagster_event.pid if events and events[0].dagster_event else None


def _dispatches(sandbox) -> Counter[str]:
    return Counter(c["path"].split("/")[4] for c in sandbox.calls("POST", r"/github/repos/.*/dispatches"))


def _repo_states(engine, tag) -> dict[str, Any]:
    with transaction(engine) as session:
        release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag)).one()
        rows = session.scalars(select(RepoBuild).where(RepoBuild.release_build_id == release.id)).all()
        return {r.repository: r.status for r in rows} | {"_release": release.status}


def test_release_steps_run_on_two_celery_workers_not_in_the_run_worker(celery, sandbox, engine):
    sandbox.configure_github(default_duration_s=1.0)
    workers = {name: celery.start_worker(name) for name in ("worker-a", "worker-b")}
    run = celery.run_release("v18.1.0")

    assert celery.wait(run, "v18.1.0") == 0
    assert _repo_states(engine, "v18.1.0") == dict.fromkeys([*ALL, "_release"], "succeeded")
    # The run worker is the CLI's process; no step ran in it.
    run_pid = _run_pid(celery.home)
    assert run_pid == run.pid
    steps = _step_pids(celery.home)
    assert {step for step, _ in steps} == {"start_release", *(f"build_{r.replace('-', '_')}" for r in ALL)} | {
        "package",
        "publish",
    }
    assert run_pid not in {pid for _, pid in steps}
    # Each step ran in a step process of one of the two workers (their groups), and both took steps:
    # with one step process each and prefetch 1, two ready steps cannot both go to one worker.
    groups = {os.getpgid(pid) for _, pid in steps}
    assert groups == {proc.pid for proc in workers.values()}
    assert _dispatches(sandbox) == Counter(ALL)


def test_a_worker_killed_mid_step_the_other_runs_the_step_and_no_succeeded_repository_is_dispatched_again(
    celery, sandbox, engine, database_url
):
    # bllvm-node's first build never ends: its step is surely mid-poll when its worker is killed.
    sandbox.configure_github(default_duration_s=0.5, repos={"bllvm-node": {"duration_s": 3600}})
    workers = {name: celery.start_worker(name) for name in ("worker-a", "worker-b")}
    with transaction(engine) as session:  # a release trigger, as the webhook queues it
        row_id = queue.enqueue(session, "release", None, {"tag": "v18.2.0"})
    [request] = _tick(celery.home, database_url, release_queue_sensor)
    request.run_config["ops"]["start_release"]["config"].update(RUN_CONFIG)
    run = celery.run_job("release_build", request.run_config, "v18.2.0", request.tags)

    until(lambda: _dispatches(sandbox)["bllvm-node"] == 1, "bllvm-node dispatched")
    [(_, first_pid)] = until(lambda: _step_pids(celery.home, "build_bllvm_node"), "build_bllvm_node started")
    [victim] = [name for name, proc in workers.items() if os.getpgid(first_pid) == proc.pid]
    [survivor] = [name for name in workers if name != victim]
    built_before = {r for r, status in _repo_states(engine, "v18.2.0").items() if status == "succeeded"}
    assert {"bllvm-consensus", "bllvm-protocol"} <= built_before  # bllvm-node's dependencies
    sandbox.configure_github(repos={"bllvm-node": {"duration_s": 0.5}})  # its next build ends
    celery.kill(victim)

    assert celery.wait(run, "v18.2.0") == 0
    assert _repo_states(engine, "v18.2.0") == dict.fromkeys([*ALL, "_release"], "succeeded")
    # The broker gave the unacknowledged step to the other worker, which ran it again from the start.
    node_steps = _step_pids(celery.home, "build_bllvm_node")
    assert len(node_steps) == 2
    assert os.getpgid(node_steps[1][1]) == workers[survivor].pid
    # The killed build was dispatched again; every other repository once, including those built before
    # the kill (their steps had finished: the broker never gives a finished step out again).
    dispatches = _dispatches(sandbox)
    assert dispatches == Counter(ALL) + Counter(["bllvm-node"])
    assert all(dispatches[r] == 1 for r in built_before)
    # The trigger is done, with its evidence (the release succeeded), once the sensor's tick sees the run.
    _tick(celery.home, database_url, release_queue_sensor)
    assert _trigger(engine, row_id) == ("done", _events(celery.home, dg.DagsterEventType.RUN_SUCCESS)[0])


# -- a worker's step process killed mid-step: the step delivered again carries on -----------------------


def _tick(home: Path, database_url: str, sensor: dg.SensorDefinition) -> list[dg.RunRequest]:
    """One tick of a queue sensor on the test's instance: it records launches, reconciles, claims."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"database": DatabaseResource(url=database_url)}, sensor_name=sensor.name
        )
        return list(sensor.evaluate_tick(context).run_requests or [])


def _trigger(engine, row_id: int) -> tuple[str, str | None]:
    with transaction(engine) as session:
        row = session.get(TriggerQueue, row_id)
        return row.state, row.run_id


def test_a_workflow_step_killed_mid_call_is_delivered_again_and_its_trigger_done_with_each_step_recorded_once(
    celery, sandbox, engine, database_url
):
    """The same kill for the workflow job: the step delivered again resumes the execution from the store
    (the call in flight sent again with its idempotency key), and the trigger is done once the execution is."""
    celery.env |= {
        "SANDBOX_PORT": str(urlsplit(sandbox.url).port),  # the six services on the test's sandbox
        "HTTP_READ_TIMEOUT_S": "3600",  # the held call waits for the kill, not for a client timeout
    }
    tenant, workflow = new_workflow(engine, [call("score", "ml_service"), call("apply", "forecasting", ["score"])])
    execution = start(engine, tenant, workflow)
    sandbox.fault("POST", "/services/ml_service/.*", action="timeout", delay_s=3600, count=1)
    celery.start_worker("worker-a")
    [request] = _tick(celery.home, database_url, workflow_queue_sensor)
    run = celery.run_job("workflow_execution", request.run_config, "wf", request.tags)

    until(lambda: sandbox.calls("POST", "/services/ml_service/.*") or run.poll() is not None, "a call or the end")
    assert run.poll() is None, "the run ended before its first step's call was held"
    [(_, step_pid)] = _step_pids(celery.home, "run_workflow_execution")
    sandbox.http.delete("/_sandbox/faults").raise_for_status()
    os.kill(step_pid, signal.SIGKILL)

    assert celery.wait(run, "wf") == 0
    assert len(_step_pids(celery.home, "run_workflow_execution")) == 2
    assert state(engine, execution)["status"] == "succeeded"
    _tick(celery.home, database_url, workflow_queue_sensor)
    [row_id] = [int(request.tags["wrk/queue_id"])]
    assert _trigger(engine, row_id) == ("done", _events(celery.home, dg.DagsterEventType.RUN_SUCCESS)[0])
    # each step recorded once; the call in flight at the kill was sent again, with the same key
    with transaction(engine) as session:
        step_ids = session.scalars(
            select(WorkflowExecutionStep.id).where(WorkflowExecutionStep.workflow_execution_id == execution)
        ).all()
    assert len(step_ids) == 2
    for step_id in step_ids:
        assert [to for _, to in audit_moves(engine, step_id)].count("succeeded") == 1
    keys = [c["idempotency_key"] for c in sandbox.calls("POST", "/services/ml_service/.*")]
    assert len(keys) == 2 and len(set(keys)) == 1
    assert len(sandbox.calls("POST", "/services/forecasting/.*")) == 1


def _completed_audit(engine, trigger_ids) -> Counter[int]:
    with transaction(engine) as session:
        rows = session.scalars(
            select(PhaseAudit.trigger_id).where(
                PhaseAudit.trigger_id.in_(trigger_ids), PhaseAudit.outcome == PhaseOutcome.COMPLETED.value
            )
        ).all()
    return Counter(rows)


def test_a_phase_worker_step_killed_mid_batch_is_delivered_again_and_finishes_every_trigger_once(
    celery, sandbox, engine, tmp_path
):
    """SIGKILL of the worker's step (pool) process mid-batch of a phase_worker run: Celery (acks late, reject on worker
    lost) delivers the step again, which finds its rows launched by its own run and finishes each one it
    had not finished. Every trigger ends done, reconciled as the sensors do, with one completed audit row."""
    sync_calls = r"/integrations/v1/syncs"
    celery.env |= {
        "INTEGRATIONS_API_URL": sandbox.url + "/integrations",
        "PAYMENTS_API_URL": sandbox.url + "/payments",
        "PROOF_PACKET_DIR": str(tmp_path / "packets"),
        "PHASE_ROW_WORKERS": "4",
        "PHASE_WORKER_IDLE_S": "0",  # the worker ends once nothing is due
        "HTTP_READ_TIMEOUT_S": "3600",  # a held call waits for the kill, not for a client timeout
    }
    sandbox.http.post("/_sandbox/integrations/config", json={"callbacks_enabled": False}).raise_for_status()
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    with autocommit(engine) as connection:  # as the API queues 40 users' phase-1 POSTs
        posts = [phases.posted(tenant, 1, phases.parse_request(1, {"user_id": f"user-{n}"})) for n in range(40)]
        ids = [a.trigger_id for a in phases.accept_many(connection, posts)]
    # The first five syncs answer; every later one is held until the step process is killed.
    sandbox.fault("POST", sync_calls, action="delay", delay_s=0, count=5)
    sandbox.fault("POST", sync_calls, action="timeout", delay_s=3600, count=1000)
    celery.start_worker("worker-a")
    run = celery.run_job("phase_worker", {}, "phases", phase_run_tags())

    until(
        lambda: sum(_completed_audit(engine, ids).values()) == 5 and len(sandbox.calls("POST", sync_calls)) > 5,
        "five triggers completed and the next ones' calls held",
    )
    [(_, step_pid)] = _step_pids(celery.home, "work_phase_triggers")
    sandbox.http.delete("/_sandbox/faults").raise_for_status()  # the step's next delivery gets answers
    os.kill(step_pid, signal.SIGKILL)

    assert celery.wait(run, "phases") == 0
    assert len(_step_pids(celery.home, "work_phase_triggers")) == 2  # delivered again, and ran
    run_id, _ = _events(celery.home, dg.DagsterEventType.RUN_SUCCESS)
    with dg.DagsterInstance.from_config(str(celery.home)) as instance:
        reconcile_launched(instance, engine, [phases.KIND])  # what the phase sensor's tick does
    with transaction(engine) as session:
        rows = session.scalars(select(TriggerQueue).where(TriggerQueue.id.in_(ids))).all()
    assert {(r.state, r.run_id) for r in rows} == {("done", run_id)}
    assert _completed_audit(engine, ids) == Counter(ids)  # each trigger's work recorded exactly once


# -- the choice of executor and the workers' command (no broker needed) -------------------------------


@pytest.fixture
def settings_env(monkeypatch):
    def apply(**values: str) -> None:
        for name in ("EXECUTOR", "CELERY_BROKER_URL", "RABBITMQ_URL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def test_multiprocess_by_default_and_celery_per_kind_with_its_queue_and_redelivery_settings(settings_env):
    from orchestration_defs.executors import celery_config, executor_for

    local = dg.in_process_executor
    settings_env()
    assert executor_for("phases", local) is local
    settings_env(EXECUTOR="celery", CELERY_BROKER_URL="amqp://u:secret@broker:5672/wrk")
    for kind in ("releases", "workflows", "phases"):
        assert executor_for(kind, local).name == f"celery_{kind}"
        config = celery_config(kind)
        assert config["broker"] == {"env": "CELERY_BROKER_URL"}  # by name: no password in the snapshot
        assert "secret" not in str(config)
        assert config["config_source"] == {
            "task_default_queue": kind,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
        }


def test_the_broker_defaults_to_rabbitmq_url_and_celery_without_a_broker_is_refused(settings_env):
    from orchestration_defs.executors import broker_env, executor_for

    settings_env(EXECUTOR="celery", RABBITMQ_URL="amqp://guest:guest@127.0.0.1:5672/%2F")
    assert broker_env() == "RABBITMQ_URL"
    settings_env(EXECUTOR="celery")
    with pytest.raises(ValueError, match="CELERY_BROKER_URL"):
        executor_for("releases", dg.in_process_executor)


def test_the_worker_command_gives_its_queues_in_one_argument_and_the_same_redelivery_settings(settings_env, tmp_path):
    from orchestration_defs.executors import worker_command, write_worker_config

    settings_env(EXECUTOR="celery", CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/%2F")
    write_worker_config(tmp_path / "worker.yaml")
    written = yaml.safe_load((tmp_path / "worker.yaml").read_text())["execution"]["config"]
    assert written["broker"] == {"env": "CELERY_BROKER_URL"}
    assert written["config_source"]["task_acks_late"] is True
    argv = worker_command(tmp_path / "worker.yaml", name="w1")
    # Celery 5 keeps only the last -Q that dagster-celery makes of each -q: one -q, comma-separated.
    assert argv.count("-q") == 1 and argv[argv.index("-q") + 1] == "releases,workflows,phases"
    assert argv[:3] == ["dagster-celery", "worker", "start"] and argv[argv.index("-y") + 1] == str(
        tmp_path / "worker.yaml"
    )


def test_make_run_starts_celery_workers_only_with_executor_celery_and_refuses_without_a_broker():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("supervise", ROOT / "scripts" / "supervise.py")
    assert spec is not None and spec.loader is not None
    supervise = importlib.util.module_from_spec(spec)
    sys.modules["supervise"] = supervise
    spec.loader.exec_module(supervise)
    assert supervise.celery_workers({}) == 0
    assert supervise.celery_workers({"EXECUTOR": "celery", "RABBITMQ_URL": "amqp://h"}) == 2
    assert supervise.celery_workers({"EXECUTOR": "celery", "CELERY_BROKER_URL": "amqp://h", "CELERY_WORKERS": "3"}) == 3
    with pytest.raises(supervise.Misconfigured, match="with-rabbitmq"):
        supervise.celery_workers({"EXECUTOR": "celery"})
