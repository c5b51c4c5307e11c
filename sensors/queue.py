"""Queue sensors: one factory makes a sensor per trigger kind; run-status sensors close the loop.

A queue sensor only claims rows and turns each into `RunRequest(run_key="<kind>:<id>:<claim token>")`;
the run carries the row's id and claim token as tags (orchestration_defs/trigger_runs.py). Correctness
does not rest on the cursor: a row, once claimed, is not claimed again while its claim holds, and Dagster
drops a second request with the same run key.
"""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from orchestration_defs.tags import TAG_ID, TAG_TOKEN
from orchestration_defs.trigger_runs import (
    LEASE_SECONDS,
    on_canceled,
    on_failure,
    on_success,
    reconcile_launched,
    record_launches,
    rescue_expired,
    run_key,
    run_tags,
)
from resources.dagster_resources import DatabaseResource

CLAIM_BATCH = 25

RunConfigFor = Callable[[Mapping[str, Any]], dict[str, Any]]


def queue_sensor(
    kind: str,
    job: dg.JobDefinition,
    run_config_for: RunConfigFor,
    tags_for: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
    minimum_interval_seconds: int | None = None,
) -> dg.SensorDefinition:
    interval = minimum_interval_seconds or get_settings().sensor_interval_seconds

    @dg.sensor(
        name=f"{kind}_queue_sensor",
        job=job,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Claims `{kind}` triggers from the queue and launches {job.name} for each.",
    )
    def _sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
        with transaction(database.engine) as session:
            record_launches(context.instance, session, [kind])
            rescue_expired(session, [kind])
        reconcile_launched(context.instance, database.engine, [kind])
        with transaction(database.engine) as session:
            claimed = queue.claim(session, [kind], CLAIM_BATCH, LEASE_SECONDS, context.sensor_name)
        requests = [
            dg.RunRequest(
                run_key=run_key(c),
                run_config=run_config_for(c.payload),
                tags=run_tags(c, tags_for(c.payload) if tags_for else None),
            )
            for c in claimed
        ]
        if not requests:
            return dg.SensorResult(skip_reason=f"no {kind} triggers are due")
        return dg.SensorResult(run_requests=requests)

    return _sensor


def _row_of(run: dg.DagsterRun) -> tuple[int, str] | None:
    tags = run.tags
    if TAG_ID not in tags or TAG_TOKEN not in tags:
        return None
    return int(tags[TAG_ID]), tags[TAG_TOKEN]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="queue_ack_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A queued trigger's run succeeded: the trigger is done once its outcome is recorded; else it fails.",
)
def queue_ack_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource) -> None:
    row = _row_of(context.dagster_run)
    if row is None:
        return
    with transaction(database.engine) as session:
        on_success(session, row, context.dagster_run.run_id)


@dg.run_failure_sensor(
    name="queue_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A queued trigger's run failed: retry it with backoff, or mark it dead and alert ops.",
)
def queue_failure_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    run = context.dagster_run
    row = _row_of(run)
    if row is None:
        return
    with transaction(database.engine) as session:
        on_failure(session, row, run, context.failure_event.message or "run failed")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    name="queue_cancel_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A queued trigger's run was canceled by a person: the trigger is cancelled.",
)
def queue_cancel_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource) -> None:
    row = _row_of(context.dagster_run)
    if row is not None:
        with transaction(database.engine) as session:
            on_canceled(session, row)


QUEUE_STATUS_SENSORS = [queue_ack_sensor, queue_failure_sensor, queue_cancel_sensor]
