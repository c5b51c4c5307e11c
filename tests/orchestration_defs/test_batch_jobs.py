"""Batch jobs as assets: partition windows per cron, a bad cron refused, one message per period with
every field, a single-run backfill publishing in time order, a retried step publishing once, and the
schedules' ticks naming the right periods."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest
from sqlalchemy import select

from domain.batch import batch_jobs
from domain.core.models import OutboundMessage
from domain.core.settings import CRON_EXPECTED, Settings
from domain.core.store import read_transaction, transaction
from orchestration_defs.batch_jobs import (
    BatchConfigError,
    build_batch_jobs,
    partitions_for,
)
from orchestration_defs.definitions import defs
from resources.batch_publisher import BatchPublisher
from resources.dagster_resources import BatchPublisherResource, DatabaseResource
from sensors.batch import batch_messages_relay_sensor

JOB = {job.asset_name: job for job in batch_jobs.JOBS}


def _settings(**values) -> Settings:
    return Settings(environment="test", batch_start="2026-01-01", **values)


def _window(partitions, key):
    window = partitions.time_window_for_partition_key(key)
    return window.start.isoformat(), window.end.isoformat()


def test_hourly_daily_and_weekly_crons_make_their_partition_windows():
    settings = _settings(
        batch_outcome_sync_cron="0 * * * *",
        batch_risk_snapshot_backfill_cron="0 2 * * *",
        batch_industry_benchmarks_cron="0 3 * * 1",
    )
    hourly = partitions_for(JOB["outcome_sync"], settings)
    daily = partitions_for(JOB["risk_snapshot_backfill"], settings)
    weekly = partitions_for(JOB["industry_benchmarks"], settings)
    assert hourly.get_first_partition_key() == "2026-01-01-00:00"
    assert _window(hourly, "2026-03-01-05:00") == ("2026-03-01T05:00:00+00:00", "2026-03-01T06:00:00+00:00")
    assert daily.get_first_partition_key() == "2026-01-01-02:00"
    assert _window(daily, "2026-03-01-02:00") == ("2026-03-01T02:00:00+00:00", "2026-03-02T02:00:00+00:00")
    # 2026-01-05 is the first Monday after BATCH_START
    assert weekly.get_first_partition_key() == "2026-01-05-03:00"
    assert _window(weekly, "2026-03-02-03:00") == ("2026-03-02T03:00:00+00:00", "2026-03-09T03:00:00+00:00")


def test_the_timezone_setting_shapes_the_windows():
    daily = partitions_for(
        JOB["model_monitoring"], _settings(batch_model_monitoring_cron="0 6 * * *", batch_timezone="Europe/Paris")
    )
    start, end = _window(daily, "2026-03-01-06:00")
    assert (start, end) == ("2026-03-01T06:00:00+01:00", "2026-03-02T06:00:00+01:00")


@pytest.mark.parametrize("cron", ["not a cron", "61 * * * *", "0 2 * *"])
def test_a_bad_cron_refuses_to_load_naming_its_variable_and_what_is_expected(cron):
    # The settings refuse it first (tests/domain/test_settings.py); Dagster's own check stays behind them.
    unchecked = _settings().model_copy(update={"batch_outcome_sync_cron": cron})
    with pytest.raises(BatchConfigError) as refused:
        build_batch_jobs(unchecked)
    assert str(refused.value) == f"BATCH_OUTCOME_SYNC_CRON={cron!r}: expected {CRON_EXPECTED}"


def test_a_bad_timezone_or_start_refuses_to_load_naming_the_variable():
    with pytest.raises(BatchConfigError, match="BATCH_TIMEZONE="):
        build_batch_jobs(_settings().model_copy(update={"batch_timezone": "Mars/Olympus"}))
    with pytest.raises(BatchConfigError, match="BATCH_START="):
        build_batch_jobs(_settings().model_copy(update={"batch_start": "yesterday"}))


def test_the_seven_assets_are_in_one_group_each_with_a_running_schedule_on_its_cron():
    repo = defs.get_repository_def()
    graph = defs.resolve_asset_graph()
    keys = {key.path[-1] for key in graph.get_all_asset_keys()}
    assert {job.asset_name for job in batch_jobs.JOBS} <= keys
    for job in batch_jobs.JOBS:
        node = graph.get(dg.AssetKey(job.asset_name))
        assert node.group_name == "batch_jobs"
        schedule = repo.get_schedule_def(f"{job.asset_name}_schedule")
        assert schedule.cron_schedule == getattr(Settings(), job.cron_setting)
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert node.backfill_policy == dg.BackfillPolicy.single_run()


@pytest.mark.parametrize(
    ("schedule", "tick", "partition_key"),
    [
        ("outcome_sync_schedule", datetime(2026, 3, 1, 5, 0, tzinfo=UTC), "2026-03-01-04:00"),
        ("propagation_schedule", datetime(2026, 3, 1, 5, 30, tzinfo=UTC), "2026-03-01-04:30"),
        ("account_health_schedule", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "2026-03-01-06:00"),
        ("risk_snapshot_backfill_schedule", datetime(2026, 3, 2, 2, 0, tzinfo=UTC), "2026-03-01-02:00"),
        ("industry_benchmarks_schedule", datetime(2026, 3, 9, 3, 0, tzinfo=UTC), "2026-03-02-03:00"),
    ],
)
def test_a_schedule_tick_requests_the_period_that_just_closed(schedule, tick, partition_key):
    repo = defs.get_repository_def()
    definition = repo.get_schedule_def(schedule)
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    requests = definition.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [partition_key]
    job = repo.get_job(definition.job_name)
    assert dg.validate_run_config(job, requests[0].run_config)


# ---------------------------------------------------------------------------------------------------
# Materializing periods (embedded transport: the store's outbox)


@pytest.fixture
def batch_env(monkeypatch, database_url):
    from domain.core.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _asset(name: str) -> dg.AssetsDefinition:
    assets, _jobs = build_batch_jobs()
    return next(a for a in assets if a.key.path[-1] == name)


def _resources(database_url: str, **publisher) -> dict:
    return {"database": DatabaseResource(url=database_url), "batch_publisher": BatchPublisherResource(**publisher)}


def _messages(engine) -> list[OutboundMessage]:
    with read_transaction(engine) as session:
        return list(session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)).all())


def test_materializing_a_period_adds_one_message_with_every_field(batch_env, engine, database_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("industry_benchmarks")],
            partition_key="2026-03-02-03:00",
            resources=_resources(database_url),
            instance=instance,
        )
        assert result.success
        (message,) = _messages(engine)
        assert message.type == "workflow.job.trigger" and message.queue == "bi_batch_jobs"
        assert message.message_id == batch_jobs.message_id("industry-benchmarks", "2026-03-02-03:00")
        assert message.body == {
            "job": "industry-benchmarks",
            "partition_key": "2026-03-02-03:00",
            "window_start": "2026-03-02T03:00:00Z",
            "window_end": "2026-03-09T03:00:00Z",
            "scheduled_for": "2026-03-09T03:00:00Z",
            "run_id": result.run_id,
            "metadata": {"cron": "0 3 * * 1", "timezone": "UTC", "source": "manual"},
        }
        assert message.headers == {"job": "industry-benchmarks", "partition_key": "2026-03-02-03:00"}
        (materialization,) = result.asset_materializations_for_node("industry_benchmarks")
        meta = {k: v.value for k, v in materialization.metadata.items()}
        assert materialization.partition == "2026-03-02-03:00"
        assert meta["message_id"] == message.message_id and meta["queue"] == "bi_batch_jobs"
        assert meta["transport"] == "outbox" and meta["published_at"] == message.created_at.isoformat()


def test_with_the_outbox_as_transport_a_period_is_published_in_the_outbox(batch_env, engine, database_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("propagation")],
            partition_key="2026-03-02-04:30",
            resources=_resources(database_url),
            instance=instance,
        )
    assert result.success
    (message,) = _messages(engine)
    assert message.status == "published" and message.published_at == message.created_at
    with transaction(engine) as session:
        assert batch_jobs.alert_stuck(session, "ops@wrk.test", older_than_s=0) == 0  # nothing left behind


def test_a_run_on_a_store_not_migrated_fails_naming_the_store_and_wrk_orch_migrate(batch_env, databases):
    empty = databases.empty()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("industry_benchmarks")],
            partition_key="2026-03-02-03:00",
            resources=_resources(databases.url(empty)),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.to_string()
    assert "StoreNotMigrated" in message and "`wrk-orch migrate`" in message
    assert empty.url.render_as_string(hide_password=True) in message
    assert "no such table" not in message and "UndefinedTable" not in message


def test_a_range_is_one_run_publishing_one_message_per_period_in_time_order(batch_env, engine, database_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("risk_snapshot_backfill")],
            resources=_resources(database_url),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-02-01-02:00",
                "dagster/asset_partition_range_end": "2026-03-02-02:00",
            },
        )
        assert result.success
        assert len(instance.get_runs()) == 1
    messages = _messages(engine)
    keys = [m.body["partition_key"] for m in messages]
    assert len(keys) == 30 and keys == sorted(keys)
    assert keys[0] == "2026-02-01-02:00" and keys[-1] == "2026-03-02-02:00"
    assert len({m.message_id for m in messages}) == 30
    assert {m.body["run_id"] for m in messages} == {result.run_id}


def test_rematerializing_a_period_publishes_nothing_new_unless_reissued(batch_env, engine, database_url):
    asset = _asset("outcome_sync")
    with dg.instance_for_test() as instance:
        for tags in ({}, {}, {batch_jobs.REISSUE_TAG: "INC-7"}):
            assert dg.materialize(
                [asset],
                partition_key="2026-03-01-04:00",
                resources=_resources(database_url),
                instance=instance,
                tags=tags,
            ).success
    messages = _messages(engine)
    assert len(messages) == 2
    assert messages[1].message_id == batch_jobs.message_id("outcome-sync", "2026-03-01-04:00", "INC-7")


def test_a_retried_publishing_step_publishes_once(batch_env, engine, database_url, monkeypatch):
    """The step fails after its message is committed; Dagster retries it; the outbox still has one."""
    original = BatchPublisher.publish
    calls = []

    def publish_then_fail_once(self, db, messages):
        rows = original(self, db, messages)
        calls.append(len(rows))
        if len(calls) == 1:
            raise RuntimeError("the step died after the commit")
        return rows

    monkeypatch.setattr(BatchPublisher, "publish", publish_then_fail_once)
    asset = _asset("account_health")
    job = dg.define_asset_job("retrying", selection=[asset.key], op_retry_policy=dg.RetryPolicy(max_retries=1))
    local = dg.Definitions(assets=[asset], jobs=[job], resources=_resources(database_url))
    with dg.instance_for_test() as instance:
        result = local.resolve_job_def("retrying").execute_in_process(
            instance=instance, partition_key="2026-03-01-06:00", raise_on_error=False
        )
        assert result.success
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert calls == [1, 1] and len(retries) == 1
    (message,) = _messages(engine)
    assert message.body["partition_key"] == "2026-03-01-06:00"


def test_the_relay_sensor_waits_without_a_broker(batch_env, database_url):
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(instance=instance, resources=_resources(database_url)) as context,
    ):
        result = batch_messages_relay_sensor(context)
    assert not result.run_requests and "RABBITMQ_URL" in result.skip_reason.skip_message
