"""The relay sensor: with a broker, a relay run when batch-job messages are due in the outbox and none
is in flight. The freshness sensor: runs the batch assets' freshness checks when each is due."""

import warnings
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster_shared.utils import warnings as dg_warnings

from domain.batch import batch_jobs
from domain.core.store import read_transaction
from orchestration_defs.batch_jobs import relay_batch_messages
from sensors.due_work import due_work_sensor


def _outbox_transport(resources: Any) -> str | None:
    if resources.batch_publisher.publisher.broker_configured:
        return None
    return "BATCH_TRANSPORT is outbox (RABBITMQ_URL unset, or the outbox chosen): messages are delivered in the outbox"


def messages_due(resources: Any) -> dict[str, int]:
    with read_transaction(resources.database.engine) as session:
        return {"wrk/outbox_due": batch_jobs.due_count(session)}


batch_messages_relay_sensor = due_work_sensor(
    relay_batch_messages,
    messages_due,
    name="batch_messages_relay_sensor",
    minimum_interval_seconds=15,
    busy="a relay run is in flight",
    idle=_outbox_transport,
    resource_keys=frozenset({"database", "batch_publisher"}),
    description="With BATCH_TRANSPORT=rabbitmq: launches a relay run when outbox messages are due and none is in "
    "flight.",
)


def build_freshness_sensor(checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """Dagster's freshness-check sensor over the batch assets' checks (orchestration_defs/batch_jobs.py),
    which runs a check when it is due (never run, or its asset's allowed age runs out; a failed one is run
    again by the asset's next run), limited to assets materialized at least once: on a fresh instance
    an asset whose first period has not come yet is not reported stale."""
    with warnings.catch_warnings():  # superseded by FreshnessPolicy: see freshness_checks for why not
        warnings.simplefilter("ignore", category=dg_warnings.SupersessionWarning)
        due_checks = dg.build_sensor_for_freshness_checks(freshness_checks=checks, name="batch_freshness_checks_due")

    @dg.sensor(
        name="batch_freshness_checks_sensor",
        asset_selection=dg.AssetSelection.checks(*checks),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the batch assets' freshness checks when due, once the asset has been materialized.",
    )
    def batch_freshness_checks_sensor(context: dg.SensorEvaluationContext) -> dg.SensorReturnTypesUnion:
        due = due_checks(context)
        if not isinstance(due, dg.RunRequest):
            return due
        updated = [
            key
            for key in due.asset_check_keys or ()
            if context.instance.get_latest_materialization_event(key.asset_key) is not None
        ]
        if not updated:
            return dg.SkipReason("the due freshness checks' assets have never been materialized")
        return dg.RunRequest(asset_check_keys=updated)

    return batch_freshness_checks_sensor
