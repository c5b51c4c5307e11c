"""The seven-phase pipeline's sensor: `phase_queue_sensor` keeps phase worker runs alive (one more each
tick while triggers are due and fewer than PHASE_WORKERS live) and reconciles the triggers of the ones
that ended (orchestration_defs/phases.py)."""

import uuid

import dagster as dg

from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from domain.phases import phases
from domain.queue import queue
from orchestration_defs.phases import JOB, phase_worker, run_tags
from orchestration_defs.trigger_runs import reconcile_launched, rescue_expired
from resources.dagster_resources import DatabaseResource
from sensors.due_work import runs_in_flight


@dg.sensor(
    name="phase_queue_sensor",
    job=phase_worker,
    minimum_interval_seconds=get_settings().phase_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a phase_worker run while phase triggers are due and fewer than PHASE_WORKERS live; "
    "sends the triggers of a worker that ended without finishing them back to the queue.",
)
def phase_queue_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    settings = get_settings()
    engine = database.engine
    with transaction(engine) as session:
        rescue_expired(session, [phases.KIND])
    reconcile_launched(context.instance, engine, [phases.KIND])
    running = runs_in_flight(context.instance, JOB)
    if running >= settings.phase_workers:
        return dg.SensorResult(skip_reason=f"{running} phase workers live (PHASE_WORKERS)")
    with read_transaction(engine) as session:
        due = queue.due(session, phases.KIND)
    if not due:
        return dg.SensorResult(skip_reason="no phase triggers are due")
    # One more worker a tick: a backlog that outlasts the live workers' next claim brings the next one.
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"{JOB}:{uuid.uuid4()}", tags=run_tags())])
