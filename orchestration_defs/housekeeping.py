"""Housekeeping jobs: reconcile the queue with its runs, rescue expired claims, prune what is
finished (queue rows, idempotency keys, webhook deliveries, consumed events, phase events, release working
folders) after the retention settings, fold the phase audit rows into /metrics' totals, alert on batch
messages left unpublished (whatever the transport: the relay runs only with a broker), deliver the
outbox (e-mail, Slack, and the deploy history to Dagster's `live_version` asset). The sweep runs on a
schedule (schedules/housekeeping.py), the delivery when a sensor finds notifications due
(sensors/housekeeping.py)."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import Engine

from domain.batch import batch_jobs
from domain.core import housekeeping
from domain.core.models import Notification, NotificationChannel
from domain.core.notifications import DeliveryReport, deliver_due
from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from domain.phases import phase_metrics
from domain.queue import queue
from domain.queue.triggers import KINDS
from orchestration_defs.batch_jobs import report_checks
from orchestration_defs.deploy import report_live_version
from orchestration_defs.tags import HOUSEKEEPING
from orchestration_defs.trigger_runs import reconcile_launched, record_launches, rescue_expired
from resources.dagster_resources import DatabaseResource, NotificationsResource
from resources.notifications import is_retryable


@dg.op(
    description="Record runs of claimed triggers, reconcile launched triggers with their runs, rescue "
    "expired claims; prune finished triggers, idempotency keys, webhook deliveries, consumed events, phase "
    "events, release folders; fold phase audit rows into /metrics' totals; alert on batch messages left "
    "unpublished."
)
def sweep_queue(context: dg.OpExecutionContext, database: DatabaseResource) -> dict[str, Any]:
    settings = get_settings()
    with transaction(database.engine) as session:
        launched = record_launches(context.instance, session, list(KINDS))
        reaped = rescue_expired(session)
    # After record_launches, so a row whose run exists is launched, then settled from its run's status.
    reconciled = reconcile_launched(context.instance, database.engine)
    folded = 0
    # The phase audit rows into /metrics' totals, a bounded transaction at a time; before the queue's rows
    # are pruned (a row's latency needs its trigger's enqueue time).
    while True:
        with transaction(database.engine) as session:
            batch = phase_metrics.fold(session)
        folded += batch
        if batch < phase_metrics.FOLD_LIMIT:
            break
    with transaction(database.engine) as session:
        pruned = queue.prune(session, timedelta(days=settings.queue_retention_days))
        keys = housekeeping.prune_idempotency_keys(session, timedelta(days=settings.idempotency_key_retention_days))
        deliveries = housekeeping.prune_webhook_deliveries(
            session, timedelta(days=settings.webhook_delivery_retention_days)
        )
        events = housekeeping.prune_consumed_events(session, timedelta(days=settings.consumed_event_retention_days))
        phase_events = housekeeping.prune_phase_events(session, settings.phase_events_retention)
    with transaction(database.engine) as session:
        unpublished = batch_jobs.alert_stuck(session, settings.ops_email, older_than_s=settings.outbox_alert_after_s)
    if unpublished:  # the stuck messages' assets show it too (their check fails, ERROR)
        with read_transaction(database.engine) as session:
            checks = [
                batch_jobs.publish_check(session, job.name, alert_after_s=settings.outbox_alert_after_s)
                for job in batch_jobs.JOBS
            ]
        report_checks(context.instance, [check for check in checks if not check.passed])
    folders = housekeeping.prune_release_dirs(
        Path(settings.release_dir), timedelta(days=settings.release_dir_retention_days)
    )
    summary = {
        "launched": launched,
        "reaped": len(reaped),
        **reconciled,
        "pruned": pruned,
        "idempotency_keys_pruned": keys,
        "webhook_deliveries_pruned": deliveries,
        "consumed_events_pruned": events,
        "phase_events_pruned": phase_events,
        "phase_audit_folded": folded,
        "release_dirs_pruned": len(folders.removed),
        "batch_messages_alerted": unpublished,
    }
    context.add_output_metadata(summary)
    return summary


@dg.job(
    description="Housekeeping: reconcile the queue with its runs, reap expired claims, prune finished rows.",
    tags=HOUSEKEEPING,
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def queue_sweeper() -> None:
    sweep_queue()


def deliver(engine: Engine, instance: dg.DagsterInstance, notifier: Callable[[Notification], None]) -> DeliveryReport:
    """The outbox's due messages: the deploy history's to the Dagster instance, the others to the notifier.
    deliver_due opens its own short transactions: none is open while a message is sent."""

    def send(message: Notification) -> None:
        if message.channel == NotificationChannel.DAGSTER:
            report_live_version(instance, message)
        else:
            notifier(message)

    return deliver_due(engine, send, is_retryable=is_retryable)


@dg.op(
    description="Send the outbox's due notifications (e-mail, Slack) and report the deploy history to Dagster "
    "(the live_version asset), at least once each."
)
def deliver_outbox(
    context: dg.OpExecutionContext, database: DatabaseResource, notifications: NotificationsResource
) -> dict[str, Any]:
    report = deliver(database.engine, context.instance, notifications.notifier)
    summary = {"sent": report.sent, "failed": report.failed, "dead": report.dead}
    context.add_output_metadata(summary)
    return summary


@dg.job(
    description="Housekeeping: deliver pending outbox notifications.",
    tags=HOUSEKEEPING,
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def deliver_notifications() -> None:
    deliver_outbox()
