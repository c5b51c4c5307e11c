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

# A freshness check allows its cron's longest period plus BATCH_FRESHNESS_GRACE_S (15 min by default; the
# default crons are hourly at the most often): a look every two minutes finds a stale asset within two
# minutes, at a quarter of the cost of Dagster's 30 s default (each look opens the instance and reads every
# check's last evaluation).
FRESHNESS_INTERVAL_S = 120


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
    evaluated every FRESHNESS_INTERVAL_S, which runs a check when it is due (never run, or its asset's
    allowed age runs out; a failed one is run again by the asset's next run), limited to assets
    materialized at least once: on a fresh instance an asset whose first period has not come yet is not
    reported stale."""
    with warnings.catch_warnings():  # superseded by FreshnessPolicy: see freshness_checks for why not
        warnings.simplefilter("ignore", category=dg_warnings.SupersessionWarning)
        due_checks = dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name="batch_freshness_checks_due", minimum_interval_seconds=FRESHNESS_INTERVAL_S
        )

    @dg.sensor(
        name="batch_freshness_checks_sensor",
        minimum_interval_seconds=FRESHNESS_INTERVAL_S,
        asset_selection=dg.AssetSelection.checks(*checks),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs the batch assets' freshness checks when due, once the asset has been materialized.",
    )
    def batch_freshness_checks_sensor(context: dg.SensorEvaluationContext) -> dg.SensorReturnTypesUnion:
        due = due_checks(context)
        if not isinstance(due, dg.RunRequest):
            return due
        keys = list(due.asset_check_keys or ())
        materialized = {
            record.asset_entry.asset_key
            for record in context.instance.get_asset_records([key.asset_key for key in keys])
            if record.asset_entry.last_materialization_record is not None
        }  # one storage read for them all, not one per asset
        updated = [key for key in keys if key.asset_key in materialized]
        if not updated:
            return dg.SkipReason("the due freshness checks' assets have never been materialized")
        return dg.RunRequest(asset_check_keys=updated)

    return batch_freshness_checks_sensor
