"""The seven-phase pipeline's sensors: `phase_queue_sensor` claims up to PHASE_BATCH_SIZE phase triggers
per phase_batch run it launches; `phase_batch_failure_sensor` sends a failed run's triggers back."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.phases import phases
from domain.queue import queue
from orchestration_defs.phases import JOB, phase_batch, run_config, run_tags
from orchestration_defs.trigger_runs import LEASE_SECONDS, on_failure, reconcile_launched, rescue_expired
from resources.dagster_resources import DatabaseResource
from sensors.due_work import runs_in_flight


@dg.sensor(
    name="phase_queue_sensor",
    job=phase_batch,
    minimum_interval_seconds=get_settings().phase_sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Claims up to PHASE_BATCH_SIZE phase triggers per phase_batch run it launches, as many runs as "
    "PHASE_RUNS_IN_FLIGHT leaves room for.",
)
def phase_queue_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    settings = get_settings()
    engine = database.engine
    with transaction(engine) as session:
        rescue_expired(session, [phases.KIND])
    reconcile_launched(context.instance, engine, [phases.KIND])
    running = runs_in_flight(context.instance, JOB)
    if running >= settings.phase_runs_in_flight:
        return dg.SensorResult(skip_reason=f"{running} phase runs in flight (PHASE_RUNS_IN_FLIGHT)")
    # Every free run slot in this tick, in one claim cut into batches: after a burst, two finished runs
    # are replaced at once rather than one a tick.
    with transaction(engine) as session:
        claimed = queue.claim(
            session,
            [phases.KIND],
            settings.phase_batch_size * (settings.phase_runs_in_flight - running),
            LEASE_SECONDS,
            context.sensor_name,
        )
    batches = [claimed[n : n + settings.phase_batch_size] for n in range(0, len(claimed), settings.phase_batch_size)]
    requests = [
        dg.RunRequest(
            run_key=f"{phases.KIND}:{batch[0].id}:{batch[0].claim_token}",  # new for every claim
            run_config=run_config(batch),
            tags=run_tags(batch),
        )
        for batch in batches
    ]
    if not requests:
        return dg.SensorResult(skip_reason="no phase triggers are due")
    return dg.SensorResult(run_requests=requests)


def rows_of(run: dg.DagsterRun) -> list[tuple[int, str]]:
    """The (trigger id, claim token) pairs a phase_batch run was launched with."""
    run_config: Mapping[str, Any] = run.run_config or {}
    config = run_config.get("ops", {}).get("process_phase_triggers", {}).get("config", {})
    return [(int(r["trigger_id"]), str(r["claim_token"])) for r in config.get("rows", [])]


@dg.run_failure_sensor(
    name="phase_batch_failure_sensor",
    monitored_jobs=[phase_batch],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A phase_batch run failed: its triggers still held by it go back to the queue with backoff.",
)
def phase_batch_failure_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    """A run that failed before it took its triggers (its worker never started: run monitoring's start
    timeout) leaves them claimed; each one still held by this run's claim goes back to the queue with the
    kind's backoff (dead on its last attempt, alerted), as a failed single-trigger run's would. Triggers
    the run already finished are left alone (their claim is gone). Lost reactions: the claims' lease
    expires and the sweeper puts them back, and launched ones are reconciled with the run's status."""
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    with transaction(database.engine) as session:
        for row in rows_of(run):
            on_failure(session, row, run, message)
