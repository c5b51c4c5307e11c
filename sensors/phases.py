"""The seven-phase pipeline's sensor: `phase_queue_sensor` keeps PHASE_WORKERS phase worker runs alive while
phase triggers are due or were queued in the last PHASE_WORKER_IDLE_S (so a burst finds them all started,
not one more a tick), starts a successor for a worker about to end (tagged retiring), and reconciles the
triggers of the ones that ended (orchestration_defs/phases.py)."""

import uuid

import dagster as dg

from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from domain.phases import phases
from domain.queue import queue
from orchestration_defs.phases import JOB, TAG_RETIRING, phase_worker, queued_lately, run_tags
from orchestration_defs.trigger_runs import reconcile_launched, rescue_expired
from resources.dagster_resources import DatabaseResource
from sensors.due_work import IN_FLIGHT, runs_in_flight


@dg.sensor(
    name="phase_queue_sensor",
    job=phase_worker,
    minimum_interval_seconds=get_settings().phase_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps PHASE_WORKERS phase_worker runs live (a retiring one not counted) while phase triggers "
    "are due or were queued in the last PHASE_WORKER_IDLE_S; sends the triggers of a worker that ended "
    "without finishing them back to the queue.",
)
def phase_queue_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    settings = get_settings()
    engine = database.engine
    with transaction(engine) as session:
        rescue_expired(session, [phases.KIND])
    reconcile_launched(context.instance, engine, [phases.KIND])
    retiring = context.instance.get_runs_count(
        filters=dg.RunsFilter(job_name=JOB, statuses=IN_FLIGHT, tags={TAG_RETIRING: "true"})
    )
    live = runs_in_flight(context.instance, JOB) - retiring
    if live >= settings.phase_workers:
        return dg.SensorResult(skip_reason=f"{live} phase workers live (PHASE_WORKERS)")
    with read_transaction(engine) as session:
        wanted = queue.due(session, phases.KIND) or queued_lately(session)
    if not wanted:
        return dg.SensorResult(skip_reason="no phase trigger is due or was queued in the last PHASE_WORKER_IDLE_S")
    missing = settings.phase_workers - live
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{JOB}:{uuid.uuid4()}", tags=run_tags()) for _ in range(missing)]
    )
