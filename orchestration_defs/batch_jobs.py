"""Batch jobs as assets: seven time-partitioned assets (group `batch_jobs`), each on its own cron, each
with a schedule built from its partitioned job (schedules/batch.py). Materializing a period publishes that period's
`workflow.job.trigger` message through the publisher resource (domain/batch/batch_jobs.py); a backfill over a
range is one run (single-run backfill policy) publishing one message per period, in time order.

Each asset's health in Dagster: its `message_published` check (every period's message out, evaluated in the
asset's run, by the relay and by the sweeper) and Dagster's last-update freshness check, whose "update" is the
publish time each period's materialization or relay observation carries (sensors/batch.py runs them).
"""

import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
from dagster_shared.utils import warnings as dg_warnings
from sqlalchemy import Engine, select

from domain.batch import batch_jobs
from domain.batch.batch_jobs import JOBS, BatchJob
from domain.core.models import OutboundMessage
from domain.core.settings import CRON_EXPECTED, ConfigurationError, Settings, get_settings
from domain.core.store import read_transaction
from orchestration_defs.tags import HOUSEKEEPING, TAG_FLOW
from resources.dagster_resources import BatchPublisherResource, DatabaseResource

GROUP = "batch_jobs"
PUBLISHED_CHECK = "message_published"
LAST_UPDATED = "dagster/last_updated_timestamp"  # what Dagster's freshness checks read as an update's time
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


def message_metadata(row: OutboundMessage, transport: str) -> dict[str, Any]:
    """What one period's message is and where it stands, as its materialization (or, once the relay has
    published it, its observation) shows it. A published message's publish time is the asset's last update,
    which its freshness check reads; a pending one has none yet."""
    metadata: dict[str, Any] = {
        "message_id": row.message_id,
        "queue": row.queue,
        "transport": transport,
        "enqueued_at": _iso(row.created_at),
        "published_at": _iso(row.published_at) or "pending (the relay publishes it)",
        "attempts": row.attempts,
    }
    if row.published_at is not None:
        metadata[LAST_UPDATED] = dg.MetadataValue.timestamp(row.published_at)
    return metadata


def check_result(check: batch_jobs.PublishCheck) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=PUBLISHED_CHECK,
        passed=check.passed,
        severity=dg.AssetCheckSeverity.ERROR if check.severe else dg.AssetCheckSeverity.WARN,
        description=check.description,
        metadata=check.metadata,
    )


def batch_asset(job: BatchJob, partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=job.asset_name,
        group_name=GROUP,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=f"{job.description}: publishes `{batch_jobs.TRIGGER_TYPE}` for `{job.name}`, one per period.",
        kinds={"rabbitmq"},
        metadata={"cron": partitions_def.cron_schedule, "timezone": partitions_def.timezone, "job": job.name},
        # A range yields one materialization per period, each with its own message, and no output.
        output_required=False,
        check_specs=[
            dg.AssetCheckSpec(
                PUBLISHED_CHECK,
                asset=job.asset_name,
                description="Every period's message has left through the transport: published in the outbox, "
                "or confirmed by the broker. WARN while the relay may still publish it, ERROR once it has waited "
                "longer than OUTBOX_ALERT_AFTER_S.",
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, database: DatabaseResource, batch_publisher: BatchPublisherResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckResult]:  # type: ignore[type-arg]
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
        transport = "rabbitmq" if publisher.broker_configured else "outbox"
        published = [row for row in rows if row.published_at is not None]
        context.log.info(
            f"{job.name}: {len(rows)} period(s) {windows[0][1]}..{windows[-1][1]} to {publisher.queue}; "
            f"{len(published)} published ({transport})"
        )
        if len(rows) == 1:  # a scheduled period: the asset's output, so the checks that follow it run
            yield dg.MaterializeResult(metadata={**message_metadata(rows[0], transport), **extra})
        else:  # a range: one materialization per period (an output would give every period the same metadata)
            for (_window, key), row in zip(windows, rows, strict=True):
                yield dg.AssetMaterialization(
                    asset_key=context.asset_key, partition=key, metadata={**message_metadata(row, transport), **extra}
                )
        with read_transaction(database.engine) as session:
            check = batch_jobs.publish_check(session, job.name, alert_after_s=get_settings().outbox_alert_after_s)
        yield check_result(check)

    return _asset


def report_published(
    instance: dg.DagsterInstance, engine: Engine, message_ids: Sequence[str]
) -> list[dg.AssetObservation]:
    """For messages the relay published to the broker after their run: one observation per period with its
    true publish time, and each job's `message_published` check evaluated again. Returns the observations (the
    caller logs them in its run); the check evaluations are reported to the instance."""
    if not message_ids:
        return []
    settings = get_settings()
    with read_transaction(engine) as session:
        rows = session.scalars(
            select(OutboundMessage)
            .where(
                OutboundMessage.message_id.in_(list(message_ids)),
                OutboundMessage.type == batch_jobs.TRIGGER_TYPE,
                OutboundMessage.job.in_(list(batch_jobs.JOBS_BY_NAME)),
            )
            .order_by(OutboundMessage.id)
        ).all()
        observations = [
            dg.AssetObservation(
                asset_key=batch_jobs.JOBS_BY_NAME[row.job].asset_name,
                partition=str(row.body.get("partition_key")),
                metadata=message_metadata(row, "rabbitmq"),
            )
            for row in rows
        ]
        checks = [
            batch_jobs.publish_check(session, job, alert_after_s=settings.outbox_alert_after_s)
            for job in sorted({row.job for row in rows})
        ]
    report_checks(instance, checks)
    return observations


def report_checks(instance: dg.DagsterInstance, checks: Sequence[batch_jobs.PublishCheck]) -> None:
    """Record `message_published` evaluations made outside the asset's run (relay, sweeper)."""
    for check in checks:
        result = check_result(check)
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(batch_jobs.JOBS_BY_NAME[check.job].asset_name),
                check_name=PUBLISHED_CHECK,
                passed=result.passed,
                severity=result.severity,
                description=result.description,
                metadata=result.metadata,
            )
        )


def longest_period(partitions_def: dg.TimeWindowPartitionsDefinition, ticks: int = 400) -> timedelta:
    """The longest time between two ticks of the partitions' cron (a year of daily ticks; a monthly cron's
    31 days), from its first period on."""
    key = partitions_def.get_first_partition_key() or partitions_def.start.strftime(PARTITION_FORMAT)
    longest = timedelta(0)
    for _ in range(ticks):
        window = partitions_def.time_window_for_partition_key(key)
        longest = max(longest, window.end - window.start)
        key = window.end.strftime(PARTITION_FORMAT)
    return longest


def freshness_checks(assets: Sequence[dg.AssetsDefinition], settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Per batch asset, Dagster's freshness check: it fails (ERROR) when the asset's last update (the
    publish time of its newest message, or its last materialization) is older than the longest gap between
    two ticks of its cron plus BATCH_FRESHNESS_GRACE_S: a missed tick or a stuck outbox."""
    checks: list[dg.AssetChecksDefinition] = []
    for asset in assets:
        partitions_def = asset.partitions_def
        assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
        allowed = longest_period(partitions_def) + timedelta(seconds=settings.batch_freshness_grace_s)
        with warnings.catch_warnings():
            # Dagster marks the check factories superseded by FreshnessPolicy, which only the freshness daemon
            # evaluates and which is no asset check: these are checks, evaluated by their own sensor.
            warnings.simplefilter("ignore", category=dg_warnings.SupersessionWarning)
            checks.extend(
                dg.build_last_update_freshness_checks(
                    assets=[asset], lower_bound_delta=allowed, severity=dg.AssetCheckSeverity.ERROR
                )
            )
    return checks


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
                # Partitioned like its asset; with its checks: `message_published` in the asset's step, the
                # freshness check after it (a failed one is evaluated again only by such a run; a range has no
                # output, so a backfill skips it).
                selection=[asset.key],
                executor_def=dg.in_process_executor,  # one asset, one step: no second process to start
                tags={TAG_FLOW: "batch"},
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
    # Each published period's true publish time on its asset, and its job's check evaluated again.
    for observation in report_published(context.instance, database.engine, report.published_ids):
        context.log_event(observation)
    summary = {"published": report.published, "failed": report.failed, "alerted": report.alerted}
    context.add_output_metadata(summary)
    return summary


@dg.job(
    description="Housekeeping: publish the batch-job messages still in the outbox to RabbitMQ.",
    tags=HOUSEKEEPING,
    executor_def=dg.in_process_executor,  # one step: no second process to start
)
def relay_batch_messages() -> None:
    relay_outbox_messages()
