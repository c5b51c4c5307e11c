"""A lost run-status reaction never leaves a trigger `launched`: one sweep (or one queue-sensor tick)
settles every launched row from its run's status in Dagster. And a requeued trigger gets a run key it
never had, so Dagster launches it at once, and its done row names the run that fulfilled it."""

from datetime import UTC, datetime

import dagster as dg
import pytest
from sqlalchemy import select, update

from domain.core.models import AuditLog, Notification, TriggerQueue
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from orchestration_defs.build import build_automation_version
from orchestration_defs.housekeeping import queue_sweeper
from orchestration_defs.tags import TAG_RETRYABLE, TAG_TOKEN
from resources.dagster_resources import DatabaseResource
from sensors.build import build_queue_sensor
from sensors.queue import queue_ack_sensor, queue_failure_sensor
from tests.domain import factories


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture
def resources(database_url):
    return {"database": DatabaseResource(url=database_url)}


@pytest.fixture(autouse=True)
def settings(monkeypatch, tmp_path, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RELEASE_DIR", str(tmp_path / "releases"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _enqueue(engine, n: int, built: bool = True) -> list[int]:
    """Build triggers whose runs' work is recorded (`built`), or not: a run that succeeds is no evidence."""
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        payloads = [factories.build_trigger(session, tenant, built) for _ in range(n)]
        return [
            queue.enqueue(session, "build", tenant, p, dedup_key="build:" + p["automation_version_id"])
            for p in payloads
        ]


def _tick(instance, resources) -> list[dg.RunRequest]:
    context = dg.build_sensor_context(instance=instance, resources=resources, sensor_name="build_queue_sensor")
    return list(build_queue_sensor.evaluate_tick(context).run_requests or [])


def _launch(instance, request: dg.RunRequest, extra_tags=None) -> dg.DagsterRun:
    """What the daemon does with a RunRequest (the run key is the daemon's dedup; a test launches each)."""
    return instance.create_run_for_job(
        build_automation_version,
        run_config=request.run_config,
        tags={**request.tags, **(extra_tags or {})},
        status=dg.DagsterRunStatus.STARTED,
    )


def _end_without_reaction(instance, run: dg.DagsterRun, status: dg.DagsterRunStatus) -> None:
    """The run ends in Dagster, but its run-status sensor's reaction is lost (never evaluated)."""
    if status == dg.DagsterRunStatus.FAILURE:
        instance.report_run_failed(run, "boom in the op")
    elif status == dg.DagsterRunStatus.CANCELED:
        instance.report_run_canceled(run)
    else:
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name), run.run_id
        )
    assert instance.get_run_by_id(run.run_id).status == status


def _rows(engine, ids) -> list[TriggerQueue]:
    with transaction(engine) as session:
        return [session.get(TriggerQueue, i) for i in ids]


def _six_launched_rows_whose_reactions_were_lost(engine, instance, resources):
    ids = _enqueue(engine, 6)
    requests = {int(r.tags["wrk/queue_id"]): r for r in _tick(instance, resources)}
    runs = [_launch(instance, requests[i], {TAG_RETRYABLE: "false"} if n == 2 else None) for n, i in enumerate(ids)]
    assert _tick(instance, resources) == []  # this tick records the launches
    assert {r.state for r in _rows(engine, ids)} == {"launched"}
    _end_without_reaction(instance, runs[0], dg.DagsterRunStatus.SUCCESS)
    _end_without_reaction(instance, runs[1], dg.DagsterRunStatus.FAILURE)
    _end_without_reaction(instance, runs[2], dg.DagsterRunStatus.FAILURE)  # marked permanent by its op
    _end_without_reaction(instance, runs[3], dg.DagsterRunStatus.CANCELED)
    instance.delete_run(runs[4].run_id)  # someone deleted the run in the UI
    # runs[5] is still running
    return ids, runs


def _check_settled(engine, ids, runs, released_state="available") -> None:
    done, retrying, dead, cancelled, released, running = _rows(engine, ids)
    assert done.state == "done" and done.run_id == runs[0].run_id and done.claim_token is None
    assert retrying.state == "available" and retrying.available_at > retrying.updated_at  # the kind's backoff
    assert runs[1].run_id in retrying.last_error and "boom in the op" in retrying.last_error
    assert dead.state == "dead" and runs[2].run_id in dead.last_error
    assert cancelled.state == "cancelled"
    assert released.state == released_state and runs[4].run_id in released.last_error
    assert running.state == "launched" and running.run_id == runs[5].run_id
    with transaction(engine) as session:
        audit = session.scalars(select(AuditLog.entity_id).where(AuditLog.action == "trigger_dead")).all()
        alerts = session.scalars(select(Notification.dedup_key).where(Notification.template == "ops_alert")).all()
    assert audit == [str(dead.id)] and alerts == [f"trigger_dead:{dead.id}:{runs[2].run_id}"]


def test_one_sweep_settles_every_launched_row_whose_reaction_was_lost(engine, instance, resources):
    ids, runs = _six_launched_rows_whose_reactions_were_lost(engine, instance, resources)
    with transaction(engine) as session:
        before = queue.stats(session)["kinds"]["build"]["oldest_launched_age_s"]
    assert before is not None and before >= 0
    result = queue_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.success
    summary = result.output_for_node("sweep_queue")
    assert (summary["acked"], summary["failed"], summary["cancelled"], summary["released"]) == (1, 2, 1, 1)
    _check_settled(engine, ids, runs)
    # a reaction that arrives late changes nothing: the rows are no longer held by its claim
    late = instance.get_run_by_id(runs[1].run_id)
    event = instance.get_records_for_run(late.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[-1]
    context = dg.build_run_status_sensor_context(
        sensor_name=queue_failure_sensor.name,
        dagster_instance=instance,
        dagster_run=late,
        dagster_event=event.event_log_entry.dagster_event,
        resources=resources,
    )
    queue_failure_sensor(context.for_run_failure())
    _check_settled(engine, ids, runs)
    assert _rows(engine, [ids[1]])[0].attempts == 1


def test_the_queue_sensors_tick_settles_them_too(engine, instance, resources):
    ids, runs = _six_launched_rows_whose_reactions_were_lost(engine, instance, resources)
    requests = _tick(instance, resources)
    _check_settled(engine, ids, runs, released_state="claimed")
    # the released row was due at once, so the same tick claimed it again, with a new run key
    [again] = requests
    assert int(again.tags["wrk/queue_id"]) == ids[4] and again.tags[TAG_TOKEN] not in {r.tags[TAG_TOKEN] for r in runs}


def test_stats_show_the_age_of_the_oldest_launched_row(engine, instance, resources):
    with transaction(engine) as session:
        assert queue.stats(session)["kinds"]["build"]["oldest_launched_age_s"] is None
    [row_id] = _enqueue(engine, 1)
    [request] = _tick(instance, resources)
    _launch(instance, request)
    _tick(instance, resources)
    with transaction(engine) as session:
        session.execute(
            update(TriggerQueue).where(TriggerQueue.id == row_id).values(updated_at=datetime(2020, 1, 1, tzinfo=UTC))
        )
    with transaction(engine) as session:
        age = queue.stats(session)["kinds"]["build"]["oldest_launched_age_s"]
    assert age > 3600 * 24 * 365


def test_a_requeued_dead_trigger_gets_a_new_run_key_and_its_done_row_names_the_new_run(engine, instance, resources):
    [row_id] = _enqueue(engine, 1)
    keys = []
    with transaction(engine) as session:
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row_id).values(max_attempts=1))
    [request] = _tick(instance, resources)
    keys.append(request.run_key)
    first = _launch(instance, request)
    _end_without_reaction(instance, first, dg.DagsterRunStatus.FAILURE)
    _tick(instance, resources)
    assert _rows(engine, [row_id])[0].state == "dead"
    with transaction(engine) as session:
        assert queue.requeue(session, row_id)
    [request] = _tick(instance, resources)
    assert request.run_key not in keys  # Dagster would skip a key it has seen, and the row would wait
    second = _launch(instance, request)
    _tick(instance, resources)
    row = _rows(engine, [row_id])[0]
    assert row.state == "launched" and row.run_id == second.run_id
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=second.job_name),
        second.run_id,
    )
    event = instance.get_records_for_run(second.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[-1]
    context = dg.build_run_status_sensor_context(
        sensor_name=queue_ack_sensor.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(second.run_id),
        dagster_event=event.event_log_entry.dagster_event,
        resources=resources,
    )
    queue_ack_sensor(context)
    row = _rows(engine, [row_id])[0]
    assert row.state == "done" and row.run_id == second.run_id


def test_the_done_row_names_the_run_that_acked_it_even_before_its_launch_was_recorded(engine):
    [row_id] = _enqueue(engine, 1)
    with transaction(engine) as session:
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row_id).values(run_id="an-older-run"))
        [claimed] = queue.claim(session, ["build"], 1, 60, "test")
    with transaction(engine) as session:
        assert queue.ack_many(session, [(row_id, claimed.claim_token)], run_id="the-new-run") == {row_id}
    assert _rows(engine, [row_id])[0].run_id == "the-new-run"


def test_a_run_created_but_never_submitted_is_failed_and_its_trigger_retried(engine, instance, resources):
    """The daemon created the run and died before submitting it: the run stays NOT_STARTED for ever and
    its row `launched`, unless reconciliation fails it once it is older than a claim's lease."""
    import time

    from orchestration_defs.trigger_runs import LEASE_SECONDS, reconcile_launched

    [row_id] = _enqueue(engine, 1)
    [request] = _tick(instance, resources)
    run = instance.create_run_for_job(
        build_automation_version,
        run_config=request.run_config,
        tags=request.tags,
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    _tick(instance, resources)  # records the launch
    assert reconcile_launched(instance, engine)["failed"] == 0  # just created: it may still be submitted
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.NOT_STARTED
    later = time.time() + LEASE_SECONDS + 1
    assert reconcile_launched(instance, engine, now=later)["failed"] == 1
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    [row] = _rows(engine, [row_id])
    assert row.state == "available" and run.run_id in row.last_error and "never started" in row.last_error


def _react_to_success(instance, run, resources) -> None:
    """The ack sensor's reaction to a run that succeeded (as the daemon evaluates it)."""
    event = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[-1]
    context = dg.build_run_status_sensor_context(
        sensor_name=queue_ack_sensor.name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run.run_id),
        dagster_event=event.event_log_entry.dagster_event,
        resources=resources,
    )
    queue_ack_sensor(context)


def test_a_run_that_succeeded_without_recording_the_outcome_fails_the_trigger_and_never_acks_it(
    engine, instance, resources
):
    """A run's success is not its trigger's outcome: a build left waiting (its version still in Build in
    Progress, no workflow recorded) goes back to the queue saying so, whether the ack sensor or
    reconciliation sees the run end; on its last attempt it is dead, audited and alerted, never done."""
    [row_id] = _enqueue(engine, 1, built=False)
    with transaction(engine) as session:
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row_id).values(max_attempts=2))
    [request] = _tick(instance, resources)
    first = _launch(instance, request)
    _tick(instance, resources)  # records the launch
    _end_without_reaction(instance, first, dg.DagsterRunStatus.SUCCESS)
    _react_to_success(instance, first, resources)
    [row] = _rows(engine, [row_id])
    assert row.state == "available" and row.available_at > row.updated_at  # the kind's backoff
    assert f"run {first.run_id} succeeded without recording the outcome of build trigger {row_id}" in row.last_error

    with transaction(engine) as session:
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row_id).values(available_at=datetime.now(UTC)))
    [request] = _tick(instance, resources)
    second = _launch(instance, request)
    _tick(instance, resources)
    _end_without_reaction(instance, second, dg.DagsterRunStatus.SUCCESS)  # and its reaction is lost
    summary = queue_sweeper.execute_in_process(instance=instance, resources=resources).output_for_node("sweep_queue")
    assert (summary["acked"], summary["failed"]) == (0, 1)
    [row] = _rows(engine, [row_id])
    assert row.state == "dead" and second.run_id in row.last_error
    with transaction(engine) as session:
        audit = session.scalars(select(AuditLog.entity_id).where(AuditLog.action == "trigger_dead")).all()
        alerts = session.scalars(select(Notification.dedup_key).where(Notification.template == "ops_alert")).all()
    assert audit == [str(row_id)] and alerts == [f"trigger_dead:{row_id}:{second.run_id}"]
    _react_to_success(instance, second, resources)  # a late reaction changes nothing
    assert _rows(engine, [row_id])[0].state == "dead"
