"""Queue sensors: one factory makes a sensor per trigger kind; run-status sensors close the loop.

A queue sensor only claims rows and turns each into `RunRequest(run_key="<kind>:<id>:<claim token>")`;
the run carries the row's id and claim token as tags. The key is new for every claim: Dagster silently
skips a run key it has seen, and the attempt number repeats after a requeue. Business rules stay in the
jobs. Correctness does not rest on the cursor: a row, once claimed, is not claimed again while its claim
holds, and Dagster drops a second request with the same run key. On each tick the sensor first records
the run of every row it claimed (claimed -> launched), so a claim whose run exists is never reaped, and
reconciles every launched row with its run's status (a run-status reaction can be lost: the store was
down when it fired, and Dagster does not try it again).
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from domain.core import lifecycle, notifications
from domain.core.lifecycle import Actor
from domain.core.models import QueueState
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import outcomes, queue
from orchestration_defs.concurrency import TAG_TENANT  # the tag the run coordinator's tenant limit counts
from resources.dagster_resources import DatabaseResource

TAG_ID = "wrk/queue_id"
TAG_KIND = "wrk/queue_kind"
TAG_TOKEN = "wrk/claim_token"
TAG_ATTEMPT = "wrk/attempt"
TAG_RETRYABLE = "wrk/retryable"  # a run sets "false" when retrying cannot help (see mark_permanent)
TAG_ALERTED = "wrk/alerted"  # a run sets "true" when it already told ops what went wrong

CLAIM_BATCH = 25
LEASE_SECONDS = 600.0  # a claim waits at most this long for its run to exist before it is reaped

RunConfigFor = Callable[[Mapping[str, Any]], dict[str, Any]]


def run_tags(claimed: queue.Claimed, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    tags = {
        TAG_ID: str(claimed.id),
        TAG_KIND: claimed.kind,
        TAG_TOKEN: claimed.claim_token,
        TAG_ATTEMPT: str(claimed.attempts),
    }
    if claimed.tenant_id:
        tags[TAG_TENANT] = claimed.tenant_id
    return tags | dict(extra or {})


def mark_permanent(context: dg.OpExecutionContext, alerted: bool = True) -> None:
    """Called by an op before it fails for good: the queue will not retry the row (and, when ops were
    already alerted by the flow, will not alert again)."""
    context.instance.add_run_tags(context.run_id, {TAG_RETRYABLE: "false", TAG_ALERTED: "true" if alerted else "false"})


def record_launches(instance: dg.DagsterInstance, session: Any, kinds: Sequence[str]) -> int:
    """claimed -> launched for each claimed row whose run exists (found by its claim token)."""
    launched = 0
    for kind in kinds:
        for row in queue.held_by_kind(session, kind, QueueState.CLAIMED):
            runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_TOKEN: row.claim_token}), limit=1)
            if runs:
                queue.launch(session, row.id, row.claim_token, runs[0].run_id)
                launched += 1
    return launched


def run_key(claimed: queue.Claimed) -> str:
    """New for every claim (the token is), so a requeued trigger's run is never skipped as a repeat."""
    return f"{claimed.kind}:{claimed.id}:{claimed.claim_token}"


# -- reactions to a run's end: one place, used by the run-status sensors and by reconciliation ---------


def on_success(session: Any, row: tuple[int, str], run_id: str) -> QueueState | None:
    """The run succeeded: the trigger is done, recording this run, when the store holds its outcome
    (domain/queue/outcomes.py); without it, the run did nothing for the trigger (a step delivered again found
    its work gone, say), so the trigger fails with that reason: back to the queue with backoff, or dead
    and alerted. Returns the row's new state, or None when this call changed nothing."""
    trigger = queue.find(session, row[0])
    if trigger is None:
        return None
    held = trigger.claim_token == row[1]
    if not held and trigger.state not in (QueueState.AVAILABLE, QueueState.DEAD):
        return None  # finished already, or held by a newer claim: left to it
    if not outcomes.recorded(session, trigger):
        return _failed_without_outcome(session, trigger, row[1], run_id) if held else None
    if held and queue.ack_many(session, [row], run_id=run_id):
        return QueueState.DONE
    # A re-execution from the UI carries its parent's (now stale) token: the trigger is fulfilled all the
    # same, so a row still waiting for its retry is finished here.
    return QueueState.DONE if queue.complete_by_run(session, row[0], run_id) else None


def _failed_without_outcome(session: Any, trigger: queue.Trigger, token: str, run_id: str) -> QueueState | None:
    error = f"run {run_id} succeeded without recording the outcome of {trigger.kind} trigger {trigger.id}"
    try:
        state = queue.fail(session, trigger.id, token, error, retryable=True, run_id=run_id)
    except queue.StaleClaim:
        return None
    if state is QueueState.DEAD:
        dead(session, trigger.id, trigger.kind, trigger.tenant_id, error, alert=True, run_id=run_id)
    return state


def on_failure(session: Any, row: tuple[int, str], run: dg.DagsterRun, error: str) -> QueueState | None:
    """The run failed: retry the row after the kind's backoff, or (run marked permanent, or no attempt
    left) kill it, audited and alerted once. None when the run's claim no longer holds the row."""
    retryable = run.tags.get(TAG_RETRYABLE) != "false"
    try:
        state = queue.fail(
            session, row[0], row[1], f"run {run.run_id}: {error}", retryable=retryable, run_id=run.run_id
        )
    except queue.StaleClaim:
        return None
    if state is QueueState.DEAD:
        dead(
            session,
            row[0],
            run.tags.get(TAG_KIND, "?"),
            run.tags.get(TAG_TENANT),
            error,
            alert=run.tags.get(TAG_ALERTED) != "true",
            run_id=run.run_id,
        )
    return state


def on_canceled(session: Any, row: tuple[int, str]) -> bool:
    """A person canceled the run: the trigger is cancelled (only while this run's claim holds it)."""
    return queue.cancel(session, row[0], row[1])


FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return (event.message if event is not None else None) or "run failed"


def _never_started(instance: dg.DagsterInstance, run: dg.DagsterRun, row: queue.Launched, now: float) -> dg.DagsterRun:
    """A run still NOT_STARTED LEASE_SECONDS after its launch was recorded was never submitted (the
    process that created it died first): nothing will ever start it, so it is failed, saying so, and its
    row takes the failure path (back to the queue with backoff, or dead). The age is the row's, on this
    store's clock: Dagster's create_timestamp depends on its database's time zone."""
    age = now - row.launched_at.timestamp()
    if run.status != dg.DagsterRunStatus.NOT_STARTED or age < LEASE_SECONDS:
        return run
    instance.report_run_failed(run, f"never started: launched {age:.0f} s ago and never submitted")
    return instance.get_run_by_id(run.run_id) or run


def reconcile_launched(
    instance: dg.DagsterInstance, engine: Any, kinds: Sequence[str] | None = None, now: float | None = None
) -> dict[str, int]:
    """Every launched row against its run in Dagster: finished runs ack, fail or cancel the row as their
    run-status sensor would have; a run that no longer exists releases the row; a run never started
    fails (_never_started); queued and running runs are left alone. Reads the rows, asks Dagster
    (outside any store transaction), then applies each outcome in a short transaction of its own,
    guarded by the claim token, so a reaction that arrives at the same time finishes the row once."""
    with transaction(engine) as session:
        rows = queue.launched(session, kinds)
    counts = {"acked": 0, "failed": 0, "cancelled": 0, "released": 0}
    if not rows:
        return counts
    runs = {r.run_id: r for r in instance.get_runs(filters=dg.RunsFilter(run_ids=[row.run_id for row in rows]))}
    for row in rows:
        run = runs.get(row.run_id)
        if run is not None:
            run = _never_started(instance, run, row, now or time.time())
        if run is not None and run.status not in FINISHED:
            continue
        held = (row.id, row.claim_token)
        error = _failure_message(instance, run.run_id) if run and run.status == dg.DagsterRunStatus.FAILURE else ""
        with transaction(engine) as session:
            if run is None:
                state = queue.release_lost(session, row.id, row.claim_token, f"run {row.run_id} no longer exists")
                if state is QueueState.DEAD:
                    dead(session, row.id, row.kind, row.tenant_id, f"run {row.run_id} no longer exists", alert=True)
                counts["released"] += state is not None
            elif run.status == dg.DagsterRunStatus.SUCCESS:
                state = on_success(session, held, run.run_id)
                counts["acked" if state is QueueState.DONE else "failed"] += state is not None
            elif run.status == dg.DagsterRunStatus.FAILURE:
                counts["failed"] += on_failure(session, held, run, error) is not None
            else:
                counts["cancelled"] += on_canceled(session, held)
    return counts


def rescue_expired(session: Any, kinds: Sequence[str] | None = None) -> list[queue.Reaped]:
    """Claims whose lease expired with no run go back to the queue; a row with no attempt left is dead,
    audited and alerted. Call after record_launches, so a claim whose run exists is never rescued."""
    reaped = queue.reap(session, kinds)
    for row in reaped:
        if row.state is QueueState.DEAD:
            dead(session, row.id, row.kind, row.tenant_id, "lease expired on its last attempt", alert=True)
    return reaped


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


def dead(
    session: Any, row_id: int, kind: str, tenant_id: str | None, error: str, *, alert: bool, run_id: str | None = None
) -> None:
    """A trigger ran out of attempts: audit it, and tell ops once."""
    lifecycle.record(
        session,
        tenant_id=tenant_id,
        entity_type="trigger_queue",
        entity_id=str(row_id),
        action="trigger_dead",
        actor=Actor.system("queue"),
        reason=error[:1000],
        metadata={"kind": kind, "run_id": run_id},
    )
    if alert:
        notifications.ops_alert(
            session,
            get_settings().ops_email,
            summary=f"{kind} trigger {row_id} is dead after its last attempt",
            details=f"Last error: {error}\nRun: {run_id or '-'}\nRequeue: POST /v1/queue/{row_id}/requeue",
            dedup_key=f"trigger_dead:{row_id}:{run_id or 'reaped'}",
            tenant_id=tenant_id,
        )


QUEUE_STATUS_SENSORS = [queue_ack_sensor, queue_failure_sensor, queue_cancel_sensor]
