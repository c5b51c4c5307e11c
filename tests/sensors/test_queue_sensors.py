"""Queue sensors with build_sensor_context: one RunRequest per row, never two for a row; run-status
sensors ack, retry with backoff, and kill a trigger after its attempts with one ops alert."""

from datetime import UTC, datetime

import dagster as dg
import pytest
from sqlalchemy import select, update

from domain.core.models import AuditLog, Notification, TriggerQueue
from domain.core.store import transaction
from domain.queue import queue
from orchestration_defs.build import build_automation_version
from orchestration_defs.tags import TAG_ID, TAG_TOKEN
from resources.dagster_resources import DatabaseResource
from sensors.build import build_queue_sensor
from sensors.queue import queue_ack_sensor, queue_failure_sensor
from tests.domain import factories


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def resources(database_url):
    return {"database": DatabaseResource(url=database_url)}


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


def _launch(instance, request: dg.RunRequest) -> dg.DagsterRun:
    """What the daemon does with a RunRequest: a run of the job, with the request's tags."""
    return instance.create_run_for_job(
        build_automation_version, run_config=request.run_config, tags=request.tags, status=dg.DagsterRunStatus.STARTED
    )


def _state(engine, row_id):
    with transaction(engine) as session:
        return session.get(TriggerQueue, row_id)


def test_one_run_request_per_row_and_none_again_when_evaluated_twice(engine, instance, resources):
    ids = _enqueue(engine, 3)
    first = _tick(instance, resources)
    assert {r.run_key for r in first} == {f"build:{r.tags[TAG_ID]}:{r.tags[TAG_TOKEN]}" for r in first}
    assert {r.tags[TAG_ID] for r in first} == {str(i) for i in ids}
    assert all(r.tags["wrk/tenant_id"] and r.tags["wrk/automation_version_id"] for r in first)
    assert first[0].run_config["ops"]["load"]["config"]["workflow_binding_id"]
    assert _tick(instance, resources) == []  # the same tick evaluated again: nothing new
    runs = [_launch(instance, r) for r in first]
    assert _tick(instance, resources) == []
    # the next tick recorded each row's run
    assert {_state(engine, i).run_id for i in ids} == {r.run_id for r in runs}
    assert {_state(engine, i).state for i in ids} == {"launched"}


def test_success_acks_the_row(engine, instance, resources):
    [row_id] = _enqueue(engine, 1)
    [request] = _tick(instance, resources)
    run = _launch(instance, request)
    _finish(instance, run, resources, dg.DagsterEventType.RUN_SUCCESS)
    assert _state(engine, row_id).state == "done"


def _finish(instance, run, resources, event_type) -> None:
    """What the daemon does when a run ends: record the event, evaluate the matching run-status sensor."""
    if event_type == dg.DagsterEventType.RUN_FAILURE:
        instance.report_run_failed(run)
    else:
        instance.report_dagster_event(
            dg.DagsterEvent(event_type_value=event_type.value, job_name=run.job_name), run.run_id
        )
    event = instance.get_records_for_run(run.run_id, of_type=event_type).records[-1].event_log_entry.dagster_event
    failed = event_type == dg.DagsterEventType.RUN_FAILURE
    sensor = queue_failure_sensor if failed else queue_ack_sensor
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=event, resources=resources
    )
    sensor(context.for_run_failure() if failed else context)


def test_failed_runs_retry_with_backoff_then_the_row_dies_with_one_ops_alert(engine, instance, resources):
    [row_id] = _enqueue(engine, 1)
    for attempt in (1, 2, 3):  # build triggers get 3 attempts
        [request] = _tick(instance, resources)
        assert request.run_key == f"build:{row_id}:{request.tags[TAG_TOKEN]}"
        assert request.tags["wrk/attempt"] == str(attempt)
        run = _launch(instance, request)
        _finish(instance, run, resources, dg.DagsterEventType.RUN_FAILURE)
        row = _state(engine, row_id)
        if attempt < 3:
            assert row.state == "available" and row.available_at > datetime.now(UTC)  # backing off
            assert _tick(instance, resources) == []  # not before its time
            with transaction(engine) as session:
                session.execute(
                    update(TriggerQueue).where(TriggerQueue.id == row_id).values(available_at=datetime.now(UTC))
                )
        else:
            assert row.state == "dead" and run.run_id in row.last_error
    with transaction(engine) as session:
        alerts = session.scalars(select(Notification).where(Notification.template == "ops_alert")).all()
        audit = session.scalars(select(AuditLog.action).where(AuditLog.entity_type == "trigger_queue")).all()
    assert len(alerts) == 1 and f"trigger {row_id} is dead" in alerts[0].payload["summary"]
    assert audit == ["trigger_dead"]


def test_a_stale_token_in_a_run_cannot_fail_a_row_claimed_again(engine, instance, resources):
    [row_id] = _enqueue(engine, 1)
    [request] = _tick(instance, resources)
    run = _launch(instance, request)
    with transaction(engine) as session:
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row_id).values(claim_token="newer-claim"))
    _finish(instance, run, resources, dg.DagsterEventType.RUN_FAILURE)
    row = _state(engine, row_id)
    assert row.claim_token == "newer-claim" and row.attempts == 1 and request.tags[TAG_TOKEN] != "newer-claim"
