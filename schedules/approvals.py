"""Approvals' housekeeping: expire overdue approvals (on_timeout applied, the continuation queued) and
call standalone approvals' callback URLs. A sensor launches one `approval_sweeper` run when either has
work and none is in flight, so an idle system launches no runs."""

import dagster as dg
from sqlalchemy import func, select

from domain.core.models import ApprovalStatus, HitlApproval
from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from domain.workflows import approval_callbacks as callback_outbox
from domain.workflows import approvals
from resources.approval_callbacks import is_retryable
from resources.dagster_resources import ApprovalCallbacksResource, DatabaseResource
from sensors.runs import in_flight

BATCH = 200


@dg.op(
    description="Mark overdue pending approvals expired (each one's on_timeout applied), then call the due "
    "callback URLs of standalone approvals (at least once each)."
)
def sweep_approvals(
    context: dg.OpExecutionContext, database: DatabaseResource, approval_callbacks: ApprovalCallbacksResource
) -> dict:
    # One op, not two: each step of a run is a process of its own, and both halves are quick.
    expired = 0
    while True:
        # Short transactions of a bounded batch: a decision waits for at most one batch.
        with transaction(database.engine) as session:
            ids = [row.id for row in approvals.expire_overdue(session, limit=BATCH)]
        expired += len(ids)
        for approval_id in ids:
            context.log.info(f"approval {approval_id} expired")
        if len(ids) < BATCH:
            break
    # After the expiries: an expired standalone approval's callback is due at once.
    # deliver_due opens its own short transactions: none is open while a callback URL answers.
    report = callback_outbox.deliver_due(database.engine, approval_callbacks.client, is_retryable=is_retryable)
    summary = {"expired": expired, "delivered": report.delivered, "failed": report.failed, "dead": report.dead}
    context.add_output_metadata(summary)
    return summary


@dg.job(
    description="Expire overdue approvals (on_timeout applied) and call standalone approvals' callbacks.",
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def approval_sweeper() -> None:
    sweep_approvals()


def work_waiting(database: DatabaseResource) -> tuple[int, int]:
    """Overdue pending approvals, and due callbacks."""
    with read_transaction(database.engine) as session:
        now = approvals.now_utc()
        overdue = session.scalar(
            select(func.count())
            .select_from(HitlApproval)
            .where(HitlApproval.status == ApprovalStatus.PENDING.value, HitlApproval.expires_at <= now)
        )
        return int(overdue or 0), callback_outbox.due_count(session, now)


@dg.sensor(
    job=approval_sweeper,
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches an approval sweep when approvals are overdue or callbacks are due, none in flight.",
)
def approval_sweeper_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    if in_flight(context.instance, approval_sweeper.name):
        return dg.SensorResult(skip_reason="an approval sweep is in flight")
    overdue, callbacks = work_waiting(database)
    if not overdue and not callbacks:
        return dg.SensorResult(skip_reason="no overdue approval, no due callback")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"wrk/overdue": str(overdue), "wrk/callbacks": str(callbacks)})]
    )
