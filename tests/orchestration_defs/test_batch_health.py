"""The batch assets' health in Dagster: each period materialized with its own message and where it
stands, the `message_published` check (pending fails with why, published passes, a stuck message turns
ERROR through the sweeper), and the freshness check failing when the last update is older than the cron
allows."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import select, update

from domain.batch import batch_jobs
from domain.core.models import OutboundMessage
from domain.core.settings import Settings, get_settings
from domain.core.store import read_transaction, transaction
from orchestration_defs.batch_jobs import (
    LAST_UPDATED,
    PUBLISHED_CHECK,
    build_batch_jobs,
    freshness_checks,
    longest_period,
    partitions_for,
)
from orchestration_defs.definitions import defs
from orchestration_defs.housekeeping import queue_sweeper
from resources.dagster_resources import BatchPublisherResource, DatabaseResource


@pytest.fixture
def batch_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BATCH_START", "2026-01-01")
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")  # a broker that is down fails at once
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _asset(name: str) -> dg.AssetsDefinition:
    assets, _jobs = build_batch_jobs()
    return next(a for a in assets if a.key.path[-1] == name)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resources(database_url: str, **publisher) -> dict:
    return {"database": DatabaseResource(url=database_url), "batch_publisher": BatchPublisherResource(**publisher)}


def _meta(event) -> dict:
    return {key: value.value for key, value in event.metadata.items()}


def _latest_check(instance: dg.DagsterInstance, asset: str, name: str = PUBLISHED_CHECK) -> dg.AssetCheckEvaluation:
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey(asset), name))
    assert record is not None and record.event is not None
    return record.event.dagster_event.event_specific_data


def test_each_period_of_a_range_is_materialized_with_its_own_message(batch_env, engine, database_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("risk_clustering")],
            resources=_resources(database_url),
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-03-01-04:00",
                "dagster/asset_partition_range_end": "2026-03-03-04:00",
            },
        )
        assert result.success
        materializations = result.asset_materializations_for_node("risk_clustering")
    with read_transaction(engine) as session:
        rows = {row.message_id: row for row in session.scalars(select(OutboundMessage))}
    assert [m.partition for m in materializations] == ["2026-03-01-04:00", "2026-03-02-04:00", "2026-03-03-04:00"]
    for materialization in materializations:
        meta = _meta(materialization)
        row = rows[meta["message_id"]]
        assert meta["message_id"] == batch_jobs.message_id("risk-clustering", materialization.partition)
        assert row.body["partition_key"] == materialization.partition
        assert meta["transport"] == "outbox" and meta["published_at"] == row.published_at.isoformat()
        assert meta[LAST_UPDATED] == row.published_at.timestamp()


def test_a_published_period_passes_its_check(batch_env, database_url):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("propagation")],
            partition_key="2026-03-02-04:30",
            resources=_resources(database_url),
            instance=instance,
        )
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == PUBLISHED_CHECK and evaluation.passed
    assert _meta(evaluation)["latest_message_id"] == batch_jobs.message_id("propagation", "2026-03-02-04:30")


def test_a_period_whose_message_stays_pending_fails_its_check_saying_why(batch_env, engine, database_url):
    """The broker is down: the run succeeds with its message in the outbox, the materialization says
    pending (no publish time), the check fails WARN; once the message has waited past the alert threshold
    the sweeper reports it ERROR on the asset."""
    broker = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [_asset("outcome_sync")],
            partition_key="2026-03-01-04:00",
            resources=_resources(database_url, rabbitmq_url=broker),
            instance=instance,
        )
        assert result.success
        (materialization,) = result.asset_materializations_for_node("outcome_sync")
        meta = _meta(materialization)
        assert meta["transport"] == "rabbitmq" and meta["published_at"].startswith("pending")
        assert LAST_UPDATED not in meta
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        why = _meta(evaluation)
        assert why["pending"] == 1 and why["oldest_partition_key"] == "2026-03-01-04:00"
        assert why["oldest_message_id"] == meta["message_id"] and "BrokerUnavailable" in why["last_error"]

        with transaction(engine) as session:
            session.execute(
                update(OutboundMessage).values(created_at=datetime.now(UTC) - timedelta(hours=2))
            )  # older than OUTBOX_ALERT_AFTER_S (900 s)
        assert queue_sweeper.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url)}
        ).success
        stuck = _latest_check(instance, "outcome_sync")
        assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
        assert _meta(stuck)["oldest_message_id"] == meta["message_id"]


def _freshness(instance, database_url, asset) -> dg.AssetCheckEvaluation:
    (check,) = freshness_checks([asset], get_settings())
    result = dg.materialize(
        [asset, check],
        selection=dg.AssetSelection.checks(check),
        resources=_resources(database_url),
        instance=instance,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_the_freshness_check_fails_when_the_last_update_is_older_than_the_cron_allows(batch_env, engine, database_url):
    """Hourly `outcome_sync`: an update is fresh for one hour plus BATCH_FRESHNESS_GRACE_S (15 min). The
    newest period's message was published two hours ago (materialized now: its message is the same, so its
    update is two hours old): the check fails; the period reissued and published now: it passes."""
    asset = _asset("outcome_sync")
    partitions = asset.partitions_def
    last = partitions.get_last_partition_key()
    message = batch_jobs.message_id("outcome-sync", last)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with transaction(engine) as session:
        window = partitions.time_window_for_partition_key(last)
        body = batch_jobs.trigger_body("outcome-sync", last, window.start, window.end, run_id="r", metadata={})
        batch_jobs.enqueue(session, queue="bi_batch_jobs", exchange="", message_id=message, body=body, published=True)
        session.execute(update(OutboundMessage).values(created_at=two_hours_ago, published_at=two_hours_ago))
    with dg.instance_for_test() as instance:
        assert dg.materialize([asset], partition_key=last, resources=_resources(database_url), instance=instance)
        stale = _freshness(instance, database_url, asset)
        assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR
        assert _meta(stale)[LAST_UPDATED] == pytest.approx(two_hours_ago.timestamp(), abs=1)

        assert dg.materialize(
            [asset],
            partition_key=last,
            resources=_resources(database_url),
            instance=instance,
            tags={batch_jobs.REISSUE_TAG: "now"},
        )
        assert _freshness(instance, database_url, asset).passed


def test_the_freshness_sensor_asks_for_the_checks_of_assets_materialized_at_least_once(batch_env, database_url):
    """A fresh instance: nothing is reported stale before an asset's first period. Once `outcome_sync`
    has been materialized, its freshness check is due (never run): the sensor asks for that one."""
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("batch_freshness_checks_sensor")
    with dg.instance_for_test() as instance:
        fresh = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
        assert not fresh.run_requests and "never been materialized" in fresh.skip_message
        assert dg.materialize(
            [_asset("outcome_sync")],
            partition_key="2026-03-01-04:00",
            resources=_resources(database_url),
            instance=instance,
        )
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
    (request,) = result.run_requests
    assert request.asset_check_keys == [dg.AssetCheckKey(dg.AssetKey("outcome_sync"), "freshness_check")]


def test_a_batch_job_run_evaluates_both_checks_after_the_materialization(batch_env):
    """Dagster's freshness sensor does not run a failed freshness check again: the asset's next run does."""
    job = defs.resolve_job_def("outcome_sync_job")  # its resources read DATABASE_URL when the run starts
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=_asset("outcome_sync").partitions_def.get_last_partition_key()
        )
    assert {(e.check_name, e.passed) for e in result.get_asset_check_evaluations()} == {
        (PUBLISHED_CHECK, True),
        ("freshness_check", True),
    }


@pytest.mark.parametrize(
    ("cron", "longest"),
    [
        ("0 * * * *", timedelta(hours=1)),
        ("0 */6 * * *", timedelta(hours=6)),
        ("0 9 * * 1-5", timedelta(days=3)),  # Friday to Monday
        ("0 0 1 * *", timedelta(days=31)),
    ],
)
def test_a_freshness_check_allows_its_crons_longest_gap_plus_the_grace(cron, longest):
    settings = Settings(
        environment="test", batch_start="2026-01-01", batch_account_health_cron=cron, batch_freshness_grace_s=600
    )
    partitions = partitions_for(batch_jobs.JOBS_BY_NAME["account-health"], settings)
    assert longest_period(partitions) == longest
    assets, _jobs = build_batch_jobs(settings)
    asset = next(a for a in assets if a.key.path[-1] == "account_health")
    (check,) = freshness_checks([asset], settings)
    (spec,) = check.check_specs
    params = spec.metadata["dagster/freshness_params"].value
    assert params["lower_bound_delta_seconds"] == (longest + timedelta(seconds=600)).total_seconds()
