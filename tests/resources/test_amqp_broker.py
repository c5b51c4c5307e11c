"""The batch-job triggers on a real RabbitMQ (the throwaway broker `make test` starts): every field as a
consumer sees it, a broker stopped in the middle of a relay pass, and a retried step publishing once."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import pika
import pika.exceptions
import pytest
from sqlalchemy import select, update

from domain.batch import batch_jobs
from domain.core.models import OutboundMessage
from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from orchestration_defs import batch_jobs as defs_module
from orchestration_defs.batch_jobs import build_batch_jobs
from resources.amqp import AmqpPublisher
from resources.batch_publisher import BatchPublisher
from resources.dagster_resources import BatchPublisherResource, DatabaseResource
from resources.retry import RetryPolicy
from sensors.batch import batch_messages_relay_sensor

pytestmark = pytest.mark.xdist_group("rabbitmq")  # one broker: the outage test stops it for everyone

FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
WINDOW = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))


def _wait_until_accepting(url: str, hang_guard_s: float = 300.0) -> None:
    """Wait until the broker accepts AMQP connections: a restarted broker (the outage test) opens its
    listener last, and on a busy machine a while after `start_app` returns. The bound only stops a dead
    broker from hanging the suite; it is not a speed check."""
    params = pika.URLParameters(url)
    deadline = time.monotonic() + hang_guard_s
    while True:
        try:
            socket.create_connection((params.host, params.port), timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(autouse=True)
def broker_accepting(rabbitmq_url: str) -> None:
    _wait_until_accepting(rabbitmq_url)


@pytest.fixture
def queue_name() -> str:
    return f"bi_batch_jobs_test_{uuid.uuid4().hex[:12]}"


def consume(url: str, queue: str, expected: int, patience_s: float = 60.0) -> list[tuple[object, dict]]:
    """Read messages from `queue` until `expected` have come (or patience runs out), acking each."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        received: list[tuple[object, dict]] = []
        deadline = time.monotonic() + patience_s
        while len(received) < expected and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            received.append((properties, json.loads(body)))
        # Anything more (a duplicate) arrives right behind; take it too so the count is honest.
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            received.append((got[1], json.loads(got[2])))
        return received
    finally:
        connection.close()


def _enqueue(engine, queue: str, job: str, keys: list[str]) -> list[str]:
    ids = []
    with transaction(engine) as session:
        for key in keys:
            body = batch_jobs.trigger_body(job, key, *WINDOW, run_id="run-1", metadata={"source": "test"})
            mid = batch_jobs.message_id(job, key)
            batch_jobs.enqueue(
                session, queue=queue, exchange="", message_id=mid, body=body, headers={"job": job, "partition_key": key}
            )
            ids.append(mid)
    return ids


def test_a_published_message_reaches_a_real_consumer_with_every_field(engine, rabbitmq_url, queue_name):
    publisher = BatchPublisher(get_settings(), rabbitmq_url=rabbitmq_url, queue=queue_name, exchange="")
    body = batch_jobs.trigger_body(
        "outcome-sync", "2026-03-01-04:00", *WINDOW, run_id="run-42", metadata={"source": "manual"}
    )
    mid = batch_jobs.message_id("outcome-sync", "2026-03-01-04:00")
    try:
        (row,) = publisher.publish(engine, [(mid, body, {"job": "outcome-sync", "partition_key": "2026-03-01-04:00"})])
    finally:
        publisher.close()
    assert row.status == "published" and row.published_at is not None

    ((properties, received),) = consume(rabbitmq_url, queue_name, 1)
    assert received == body
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.message_id == mid
    assert properties.type == "workflow.job.trigger"
    assert properties.timestamp == int(row.created_at.timestamp())
    assert properties.headers == {"job": "outcome-sync", "partition_key": "2026-03-01-04:00"}
    # The queue is durable: declaring it otherwise is refused by the broker.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable"):
            connection.channel().queue_declare(queue=queue_name, durable=False)
    finally:
        connection.close()


def test_a_named_exchange_routes_to_the_queue(engine, rabbitmq_url, queue_name):
    publisher = BatchPublisher(get_settings(), rabbitmq_url=rabbitmq_url, queue=queue_name, exchange=f"{queue_name}_x")
    ids = _enqueue(engine, queue_name, "propagation", ["2026-03-01-00:30"])
    try:
        report = publisher.relay(engine, message_ids=ids)
    finally:
        publisher.close()
    assert report.published == 1
    ((properties, _body),) = consume(rabbitmq_url, queue_name, 1)
    assert properties.message_id == ids[0]


def test_broker_stopped_mid_publish_then_started_every_message_arrives_once_per_id(
    engine, rabbitmq_url, rabbitmq_ctl, queue_name
):
    keys = [f"2026-03-01-{hour:02d}:00" for hour in range(10)]
    ids = _enqueue(engine, queue_name, "outcome-sync", keys)
    amqp = AmqpPublisher(rabbitmq_url, queue=queue_name, policy=FAST)
    published: list[str] = []

    def publish_then_stop_the_broker(message):
        amqp.publish(message)
        published.append(message.message_id)
        if len(published) == 4:
            subprocess.run([rabbitmq_ctl, "stop_app"], check=True, capture_output=True)

    relay = dict(base_delay_s=0.01, max_delay_s=0.02, ops_email="ops@wrk.test", alert_after_s=3600)
    try:
        first = batch_jobs.relay_due(engine, publish_then_stop_the_broker, **relay)
    finally:
        subprocess.run([rabbitmq_ctl, "start_app"], check=True, capture_output=True)
        subprocess.run([rabbitmq_ctl, "await_startup"], check=True, capture_output=True)
        _wait_until_accepting(rabbitmq_url)
        amqp.close()
    assert (first.published, first.failed) == (4, 6)
    with read_transaction(engine) as session:
        pending = session.scalars(select(OutboundMessage).where(OutboundMessage.status == "pending")).all()
    assert len(pending) == 6 and all("rabbitmq" in (r.last_error or "") for r in pending)

    with transaction(engine) as session:  # the backoff has passed
        session.execute(update(OutboundMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    amqp = AmqpPublisher(rabbitmq_url, queue=queue_name, policy=FAST)
    try:
        second = batch_jobs.relay_due(engine, amqp.publish, **relay)
    finally:
        amqp.close()
    assert second.published == 6

    received = consume(rabbitmq_url, queue_name, 10)
    per_id = Counter(properties.message_id for properties, _body in received)
    assert set(per_id) == set(ids)  # every message arrived (the first four survived the restart: persistent)
    deduped = {properties.message_id: body["partition_key"] for properties, body in received}
    assert len(deduped) == 10 and sorted(deduped.values()) == keys
    with read_transaction(engine) as session:
        assert all(r.status == "published" for r in session.scalars(select(OutboundMessage)))


def test_a_retried_step_publishes_one_message_to_the_broker(
    engine, database_url, rabbitmq_url, queue_name, monkeypatch
):
    """The step publishes to the broker, then dies; Dagster retries it; the broker holds one message."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RABBITMQ_URL", rabbitmq_url)
    monkeypatch.setenv("BI_BATCH_JOBS_QUEUE", queue_name)
    get_settings.cache_clear()
    original = BatchPublisher.relay
    calls: list[int] = []

    def relay_then_die_once(publisher, db, message_ids=None):
        report = original(publisher, db, message_ids=message_ids)
        calls.append(report.published)
        if len(calls) == 1:
            raise RuntimeError("the step died after publishing")
        return report

    monkeypatch.setattr(BatchPublisher, "relay", relay_then_die_once)
    try:
        assets, _jobs = build_batch_jobs()
        asset = next(a for a in assets if a.key.path[-1] == "model_monitoring")
        job = dg.define_asset_job("retrying", selection=[asset.key], op_retry_policy=dg.RetryPolicy(max_retries=1))
        local = dg.Definitions(
            assets=[asset],
            jobs=[job],
            resources={"database": DatabaseResource(url=database_url), "batch_publisher": BatchPublisherResource()},
        )
        with dg.instance_for_test() as instance:
            result = local.resolve_job_def("retrying").execute_in_process(
                instance=instance, partition_key="2026-03-01-06:00", raise_on_error=False
            )
        assert result.success
    finally:
        get_settings.cache_clear()
    assert calls == [1, 0]  # the retry found its message published already
    ((properties, body),) = consume(rabbitmq_url, queue_name, 1)
    assert properties.message_id == batch_jobs.message_id("model-monitoring", "2026-03-01-06:00")
    assert body["partition_key"] == "2026-03-01-06:00" and body["run_id"] == result.run_id


def test_the_relay_sensor_asks_for_a_run_when_messages_are_due(engine, database_url, rabbitmq_url, queue_name):
    [mid] = _enqueue(engine, queue_name, "account-health", ["2026-03-01-06:00"])
    resources = {
        "database": DatabaseResource(url=database_url),
        "batch_publisher": BatchPublisherResource(rabbitmq_url=rabbitmq_url, queue=queue_name),
    }
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = batch_messages_relay_sensor(context)
        assert len(result.run_requests) == 1
        assert defs_module.relay_batch_messages.execute_in_process(instance=instance, resources=resources).success
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            after = batch_messages_relay_sensor(context)
    assert not after.run_requests
    # At least once: a publish whose confirm was lost to a connection error is sent again with the same
    # id (seen on a busy machine), and consumers dedupe on it.
    assert {properties.message_id for properties, _body in consume(rabbitmq_url, queue_name, 1)} == {mid}


def test_a_relay_that_died_before_recording_publishes_again_with_the_same_id(engine, rabbitmq_url, queue_name):
    """At least once: the broker took the message but the relay died before marking it published; the
    claim lapses, the next pass publishes it again with the same id, and a consumer that did not ack
    gets it redelivered, still with that id. Deduping on message_id leaves one."""
    (mid,) = _enqueue(engine, queue_name, "risk-clustering", ["2026-03-01-04:00"])
    amqp = AmqpPublisher(rabbitmq_url, queue=queue_name, policy=FAST)
    try:
        with transaction(engine) as session:
            (claimed,) = batch_jobs.claim_due(session, claim_s=0)  # its claim lapses at once
        amqp.publish(claimed)  # ... and the relay dies here, before recording it
        report = batch_jobs.relay_due(
            engine, amqp.publish, base_delay_s=0.01, max_delay_s=0.02, ops_email="ops@wrk.test", alert_after_s=3600
        )
    finally:
        amqp.close()
    assert report.published == 1

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        first, properties, _body = channel.basic_get(queue_name, auto_ack=False)
        assert first is not None and properties.message_id == mid and not first.redelivered
    finally:
        connection.close()  # the consumer dies without acking: the broker redelivers
    received = consume(rabbitmq_url, queue_name, 2)
    assert [properties.message_id for properties, _body in received] == [mid, mid]
    assert len({properties.message_id for properties, _body in received}) == 1
    with read_transaction(engine) as session:
        row = session.scalars(select(OutboundMessage)).one()
    assert row.status == "published" and row.attempts == 2


def test_a_period_left_pending_is_published_by_the_relay_with_its_true_publish_time(
    engine, database_url, rabbitmq_url, queue_name, monkeypatch
):
    """The broker was unreachable when the period ran: its materialization says pending and its check
    fails. The relay publishes it later: the asset gets an observation of that period with the message id,
    the transport and the time the broker confirmed it, and its check passes."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unreachable = f"amqp://guest:guest@127.0.0.1:{sock.getsockname()[1]}/%2F"
    try:
        assets, _jobs = build_batch_jobs()
        asset = next(a for a in assets if a.key.path[-1] == "account_health")

        def resources(url: str) -> dict:
            return {
                "database": DatabaseResource(url=database_url),
                "batch_publisher": BatchPublisherResource(rabbitmq_url=url, queue=queue_name),
            }

        with dg.instance_for_test() as instance:
            run = dg.materialize(
                [asset], partition_key="2026-03-01-06:00", resources=resources(unreachable), instance=instance
            )
            (pending,) = run.get_asset_check_evaluations()
            assert not pending.passed
            # Later: its backoff has run out (the relay publishes only rows that are due).
            with transaction(engine) as session:
                session.execute(
                    update(OutboundMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
                )
            relay = defs_module.relay_batch_messages.execute_in_process(
                instance=instance, resources=resources(rabbitmq_url)
            )
            assert relay.success
            (observation,) = [
                e.asset_observation_data.asset_observation
                for e in relay.all_events
                if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
            ]
            record = instance.get_latest_asset_check_evaluation_record(
                dg.AssetCheckKey(asset.key, defs_module.PUBLISHED_CHECK)
            )
            published = record.event.dagster_event.event_specific_data
    finally:
        get_settings.cache_clear()
    with read_transaction(engine) as session:
        row = session.scalars(select(OutboundMessage)).one()
    meta = {key: value.value for key, value in observation.metadata.items()}
    assert observation.asset_key == asset.key and observation.partition == "2026-03-01-06:00"
    assert meta["message_id"] == row.message_id == batch_jobs.message_id("account-health", "2026-03-01-06:00")
    assert meta["transport"] == "rabbitmq" and meta["published_at"] == row.published_at.isoformat()
    assert meta[defs_module.LAST_UPDATED] == row.published_at.timestamp()
    assert published.passed and published.metadata["latest_message_id"].value == row.message_id
    ((properties, _body),) = consume(rabbitmq_url, queue_name, 1)
    assert properties.message_id == row.message_id
