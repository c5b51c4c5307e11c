"""A queue trigger's run in Dagster, from its launch to its end: the tags it carries, recording the
launch (claimed -> launched), the reactions to its end (ack, fail, cancel), reconciliation of launched
rows with their runs, rescue of expired claims, and a dead trigger's audit and alert. The queue sensors,
the run-status sensors, the sweeper and the phase batch all call these; business rules stay in the jobs.

A run's key is new for every claim: Dagster silently skips a run key it has seen, and the attempt number
repeats after a requeue. On each tick a queue sensor first records the run of every row it claimed, so a
claim whose run exists is never reaped, and reconciles every launched row with its run's status (a
run-status reaction can be lost: the store was down when it fired, and Dagster does not try it again).
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from domain.core import lifecycle, notifications
from domain.core.lifecycle import Actor
from domain.core.models import QueueState
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import outcomes, queue
from orchestration_defs.tags import (
    TAG_ALERTED,
    TAG_ATTEMPT,
    TAG_ID,
    TAG_KIND,
    TAG_RETRYABLE,
    TAG_TENANT,
    TAG_TOKEN,
)

LEASE_SECONDS = 600.0  # a claim waits at most this long for its run to exist before it is reaped


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
