"""Consumed events from RabbitMQ: `workflow_events_sensor` drains the configured queues; a
message is acked only after its row is committed; a repeated event id starts nothing new. Against the
real broker `make test` starts (scripts/with-rabbitmq)."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pika
import pytest
from sqlalchemy import func, select

from domain.core.models import ConsumedEvent, WorkflowExecution
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.workflows import workflow_events
from resources.dagster_resources import DatabaseResource
from sensors import workflows as workflow_sensors
from sensors.workflows import workflow_events_sensor
from tests.orchestration_defs.workflow_helpers import call, new_workflow
from tests.resources.test_amqp_broker import _wait_until_accepting


@pytest.fixture
def events_queue(rabbitmq_url, monkeypatch, database_url):
    _wait_until_accepting(rabbitmq_url)
    name = f"events-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RABBITMQ_URL", rabbitmq_url)
    monkeypatch.setenv("WORKFLOW_EVENT_QUEUES", name)
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield name
    get_settings.cache_clear()


def _send(url: str, queue: str, bodies: list[bytes]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    for body in bodies:
        channel.basic_publish(exchange="", routing_key=queue, body=body)
    connection.close()


def _depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    depth = connection.channel().queue_declare(queue=queue, durable=True, passive=True).method.message_count
    connection.close()
    return int(depth)


def _tick(database_url: str) -> None:
    context = dg.build_sensor_context(resources={"database": DatabaseResource(url=database_url)})
    workflow_events_sensor.evaluate_tick(context)


def _event(tenant: str, event_id: str) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": "shard.updated",
            "tenant_id": tenant,
            "occurred_at": "2026-11-23T08:00:00Z",
            "data": {},
        }
    ).encode()


def _executions(engine, tenant: str) -> int:
    with transaction(engine) as session:
        count = session.scalar(
            select(func.count()).select_from(WorkflowExecution).where(WorkflowExecution.tenant_id == tenant)
        )
    return int(count or 0)


def test_events_from_the_queue_start_executions_once_per_event(events_queue, rabbitmq_url, engine, database_url):
    tenant, _workflow = new_workflow(engine, [call("score")], trigger_on=["shard.updated"])
    event_id = str(uuid.uuid4())
    _send(rabbitmq_url, events_queue, [_event(tenant, event_id), _event(tenant, event_id), b"not json"])
    _tick(database_url)
    assert _executions(engine, tenant) == 1
    with transaction(engine) as session:
        row = session.get(ConsumedEvent, (tenant, event_id))
        assert row is not None and row.source == "amqp" and len(row.executions) == 1
    assert _depth(rabbitmq_url, events_queue) == 0  # the duplicate acked, the bad message rejected


def test_a_message_whose_commit_failed_is_not_acked_and_comes_back(
    events_queue, rabbitmq_url, engine, database_url, monkeypatch
):
    tenant, _workflow = new_workflow(engine, [call("score")], trigger_on=["shard.updated"])
    _send(rabbitmq_url, events_queue, [_event(tenant, str(uuid.uuid4()))])

    def store_down(*_args, **_kwargs):
        raise RuntimeError("the store went away before the commit")

    monkeypatch.setattr(workflow_sensors, "consume", store_down)
    with pytest.raises(Exception, match="store went away"):
        _tick(database_url)
    assert _executions(engine, tenant) == 0
    assert _depth(rabbitmq_url, events_queue) == 1  # not acked: back in the queue

    monkeypatch.setattr(workflow_sensors, "consume", workflow_events.consume)
    _tick(database_url)
    assert _executions(engine, tenant) == 1
    assert _depth(rabbitmq_url, events_queue) == 0


def test_a_publish_step_reaches_its_own_queue_through_the_batch_jobs_relay(rabbitmq_url, engine):
    from domain.batch import batch_jobs
    from domain.workflows.workflow_engine import run
    from resources.amqp import AmqpPublisher
    from tests.orchestration_defs.workflow_helpers import publish, start

    _wait_until_accepting(rabbitmq_url)
    target = f"results-{uuid.uuid4().hex[:8]}"
    tenant, workflow = new_workflow(engine, [publish("announce", [], queue=target)])
    execution = start(engine, tenant, workflow, {"account_id": "acc-9"})
    assert run(engine, execution, call=lambda _call: None) == "succeeded"  # no service call in this workflow

    amqp = AmqpPublisher(rabbitmq_url, queue=f"batch-{uuid.uuid4().hex[:8]}")
    try:
        report = batch_jobs.relay_due(
            engine, amqp.publish, base_delay_s=0.01, max_delay_s=0.05, ops_email="ops@wrk.test", alert_after_s=900
        )
    finally:
        amqp.close()
    assert report.published == 1
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        method, properties, body = connection.channel().basic_get(target, auto_ack=True)
    finally:
        connection.close()
    assert method is not None and json.loads(body) == {"account": "acc-9"}
    assert properties.headers["workflow_execution_id"] == execution
