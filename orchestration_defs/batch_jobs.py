"""Batch jobs as assets: seven time-partitioned assets (group `batch_jobs`), each on its own cron, each
with a schedule built from its partitioned job (schedules/batch.py). Materializing a period publishes that period's
`workflow.job.trigger` message through the publisher resource (domain/batch/batch_jobs.py); a backfill over a
range is one run (single-run backfill policy) publishing one message per period, in time order.
"""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from domain.batch import batch_jobs
from domain.batch.batch_jobs import JOBS, BatchJob
from domain.core.settings import CRON_EXPECTED, ConfigurationError, Settings, get_settings
from resources.dagster_resources import BatchPublisherResource, DatabaseResource

GROUP = "batch_jobs"
# Partition keys carry the period's start to the minute: one format for hourly, daily and weekly crons.
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"


class BatchConfigError(ConfigurationError):
    """A batch-job setting that cannot be used; the message names the environment variable."""


def _start(settings: Settings, tz: ZoneInfo) -> datetime:
    try:
        start = datetime.fromisoformat(settings.batch_start)
    except ValueError as exc:
        raise BatchConfigError(f"BATCH_START={settings.batch_start!r} is not an ISO date or date-time") from exc
    return start if start.tzinfo else start.replace(tzinfo=tz)


def partitions_for(job: BatchJob, settings: Settings) -> dg.TimeWindowPartitionsDefinition:
    """The job's periods: one per tick of its cron, from BATCH_START, in BATCH_TIMEZONE."""
    cron = str(getattr(settings, job.cron_setting)).strip()
    try:
        tz = ZoneInfo(settings.batch_timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BatchConfigError(f"BATCH_TIMEZONE={settings.batch_timezone!r} is not a known time zone") from exc
    start = _start(settings, tz)
    try:  # Dagster's own cron check, through its public definition
        return dg.TimeWindowPartitionsDefinition(
            cron_schedule=cron, start=start, timezone=settings.batch_timezone, fmt=PARTITION_FORMAT
        )
    except dg.DagsterInvalidDefinitionError as exc:
        raise BatchConfigError(f"{job.cron_variable}={cron!r}: expected {CRON_EXPECTED}") from exc


def _source(tags: dict[str, str]) -> dict[str, Any]:
    if "dagster/backfill" in tags:
        return {"source": "backfill", "backfill_id": tags["dagster/backfill"]}
    if "dagster/schedule_name" in tags:
        return {"source": "schedule", "schedule": tags["dagster/schedule_name"]}
    return {"source": "manual"}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def batch_asset(job: BatchJob, partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=job.asset_name,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=f"{job.description}: publishes `{batch_jobs.TRIGGER_TYPE}` for `{job.name}`, one per period.",
        kinds={"rabbitmq"},
        metadata={"cron": partitions_def.cron_schedule, "timezone": partitions_def.timezone, "job": job.name},
    )
    def _asset(
        context: dg.AssetExecutionContext, database: DatabaseResource, batch_publisher: BatchPublisherResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        tags = dict(context.run.tags)
        reissue = tags.get(batch_jobs.REISSUE_TAG)
        windows = sorted((partitions_def.time_window_for_partition_key(key), key) for key in context.partition_keys)
        extra = {"cron": partitions_def.cron_schedule, "timezone": partitions_def.timezone, **_source(tags)}
        messages = []
        for window, key in windows:
            body = batch_jobs.trigger_body(
                job.name, key, window.start, window.end, run_id=context.run.run_id, metadata=extra
            )
            headers = {"job": job.name, "partition_key": key}
            messages.append((batch_jobs.message_id(job.name, key, reissue), body, headers))
        publisher = batch_publisher.publisher
        rows = publisher.publish(database.engine, messages)
        published = [row for row in rows if row.published_at is not None]
        context.log.info(
            f"{job.name}: {len(rows)} period(s) {windows[0][1]}..{windows[-1][1]} to {publisher.queue}; "
            f"{len(published)} published to the broker"
            if publisher.broker_configured
            else f"{job.name}: {len(rows)} period(s) {windows[0][1]}..{windows[-1][1]} in the outbox"
        )
        first = rows[0]
        metadata: dict[str, Any] = {
            "queue": first.queue,
            "transport": "rabbitmq" if publisher.broker_configured else "outbox",
            "message_count": len(rows),
            "message_id": first.message_id if len(rows) == 1 else f"{first.message_id} .. {rows[-1].message_id}",
            # Embedded transport: in the outbox is published. With a broker: when the broker confirmed it.
            "published_at": _iso(first.published_at if publisher.broker_configured else first.created_at)
            or "pending (the relay publishes it)",
            "enqueued_at": _iso(first.created_at),
            "messages": dg.MetadataValue.json(
                [
                    {
                        "partition_key": row.body["partition_key"],
                        "message_id": row.message_id,
                        "enqueued_at": _iso(row.created_at),
                        "published_at": _iso(row.published_at),
                    }
                    for row in rows
                ]
            ),
        }
        return dg.MaterializeResult(metadata=metadata)

    return _asset


def build_batch_jobs(settings: Settings | None = None) -> tuple[list[dg.AssetsDefinition], list[Any]]:
    """The seven assets and their partitioned jobs. Raises BatchConfigError naming the variable when a
    cron, the time zone or the start cannot be used."""
    settings = settings or get_settings()
    assets, jobs = [], []
    for job in JOBS:
        partitions_def = partitions_for(job, settings)
        asset = batch_asset(job, partitions_def)
        assets.append(asset)
        jobs.append(
            dg.define_asset_job(
                job.job_name,
                selection=[asset.key],  # partitioned like its asset
                executor_def=dg.in_process_executor,  # one asset, one step: no second process to start
                description=f"One `{batch_jobs.TRIGGER_TYPE}` for `{job.name}` per period "
                f"({partitions_def.cron_schedule}).",
            )
        )
    return assets, jobs


# ---------------------------------------------------------------------------------------------------
# The relay: publishes what runs left in the outbox (broker down, or a run that died after its commit)


@dg.op(description="Publish due outbox messages to RabbitMQ (publisher confirms), in order; back off on failure.")
def relay_outbox_messages(
    context: dg.OpExecutionContext, database: DatabaseResource, batch_publisher: BatchPublisherResource
) -> dict[str, int]:
    report = batch_publisher.publisher.relay(database.engine)
    summary = {"published": report.published, "failed": report.failed, "alerted": report.alerted}
    context.add_output_metadata(summary)
    return summary


@dg.job(
    description="Publish the batch-job messages still in the outbox to RabbitMQ.",
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def relay_batch_messages() -> None:
    relay_outbox_messages()
