"""Approvals' housekeeping: expire overdue approvals (on_timeout applied, the continuation queued) and
call standalone approvals' callback URLs, in one run launched by `approval_sweeper_sensor`
(sensors/workflows.py) when either has work."""

from typing import Any

import dagster as dg

from domain.core.store import transaction
from domain.workflows import approval_callbacks as callback_outbox, approvals
from orchestration_defs.tags import HOUSEKEEPING
from resources.approval_callbacks import is_retryable
from resources.dagster_resources import ApprovalCallbacksResource, DatabaseResource

BATCH = 200


@dg.op(
    description="Mark overdue pending approvals expired (each one's on_timeout applied), then call the due "
    "callback URLs of standalone approvals (at least once each)."
)
def sweep_approvals(
    context: dg.OpExecutionContext, database: DatabaseResource, approval_callbacks: ApprovalCallbacksResource
) -> dict[str, Any]:
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
    description="Housekeeping: expire overdue approvals (on_timeout applied), call standalone approvals' callbacks.",
    tags=HOUSEKEEPING,
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def approval_sweeper() -> None:
    sweep_approvals()
