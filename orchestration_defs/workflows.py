"""Workflow executions as a Dagster job: `workflow_execution` runs (or resumes) one execution from the
state saved in the store (domain.workflows.workflow_engine). Launched by the `workflow` queue sensor (a new
execution) and the `approval` queue sensor (a decision or a timeout's default resumes it); a launch or a
re-execution from the UI with the execution id resumes it the same way: finished steps are never run again.

The run succeeds when it has taken the execution as far as it can go now (finished, or waiting for an
approval); it fails only when the engine itself could not run (the store down, a bug): the queue then
retries the trigger with backoff, and the next run resumes.

With RABBITMQ_URL set, `workflow_events_sensor` drains the event queues (WORKFLOW_EVENT_QUEUES): each
message is recorded (and its executions queued) in one transaction, and acked only after the commit.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import ValidationError

from domain.core.lifecycle import Actor
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from domain.workflows import workflow_engine
from domain.workflows.workflow_events import EventIn, UnknownTenant, consume
from orchestration_defs.executors import executor_for
from resources.dagster_resources import DatabaseResource, ServicesResource
from sensors.queue import TAG_ATTEMPT, TAG_KIND, queue_sensor

TAG_EXECUTION = "wrk/workflow_execution_id"
TAG_WORKFLOW = "wrk/workflow_id"
DRAIN_LIMIT = 500  # messages per sensor tick and queue: a tick stays well inside the sensor's timeout


class WorkflowExecutionConfig(dg.Config):
    workflow_execution_id: str
    tenant_id: str | None = None  # a hint (the store decides)


def _exchange_for(queue_name: str) -> str:
    """A publish step to the batch-jobs queue goes through its exchange; other queues via the default."""
    settings = get_settings()
    return settings.bi_batch_jobs_exchange if queue_name == settings.bi_batch_jobs_queue else ""


@dg.op(description="Run the workflow execution's ready steps from its saved state until it ends or waits.")
def run_workflow_execution(
    context: dg.OpExecutionContext,
    config: WorkflowExecutionConfig,
    database: DatabaseResource,
    services: ServicesResource,
) -> None:
    from domain.core.models import WorkflowExecution

    with transaction(database.engine) as session:
        execution = session.get(WorkflowExecution, config.workflow_execution_id)
        if execution is None:
            raise dg.Failure(
                description=f"workflow execution {config.workflow_execution_id} not found", allow_retries=False
            )
        tags = {TAG_EXECUTION: execution.id, "wrk/tenant_id": execution.tenant_id}
        if execution.workflow_id:
            tags[TAG_WORKFLOW] = execution.workflow_id
    context.instance.add_run_tags(context.run_id, tags)
    try:
        status = workflow_engine.run(
            database.engine,
            config.workflow_execution_id,
            call=services.services.call,
            run_id=context.run_id,
            max_parallel=get_settings().workflow_max_parallel_steps,
            exchange_for=_exchange_for,
            outbox_transport=get_settings().batch_transport == "outbox",
        )
    except Exception as exc:
        # The queue retries a failed run (the next one resumes); on the trigger's last attempt the
        # execution ends `failed` here, so it does not stay `running` with no owner.
        kind, attempt = context.run.tags.get(TAG_KIND), int(context.run.tags.get(TAG_ATTEMPT, "0") or 0)
        if kind in ("workflow", "approval") and attempt >= queue.policy(kind).max_attempts:
            with transaction(database.engine) as session:
                workflow_engine.abandon(
                    session,
                    config.workflow_execution_id,
                    f"run failed on its last attempt: {type(exc).__name__}: {exc}",
                )
        raise
    context.log.info(f"workflow execution {config.workflow_execution_id} is {status}")
    context.add_output_metadata({"execution_status": status})


@dg.job(
    executor_def=executor_for("workflows", dg.in_process_executor),  # one op; steps on its thread pool
    description="Run or resume one workflow execution from the store.",
    tags={"wrk/flow": "workflow"},
)
def workflow_execution() -> None:
    run_workflow_execution()


def _run_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ops": {
            "run_workflow_execution": {
                "config": {"workflow_execution_id": payload["workflow_execution_id"], "tenant_id": payload["tenant_id"]}
            }
        }
    }


def _tags(payload: Mapping[str, Any]) -> dict[str, str]:
    """With the queue sensor's own (row, token, tenant): the execution, and the workflow when known (an
    approval trigger does not name it; the run adds it when it starts)."""
    tags = {TAG_EXECUTION: str(payload["workflow_execution_id"])}
    if payload.get("workflow_id"):
        tags[TAG_WORKFLOW] = str(payload["workflow_id"])
    return tags


workflow_queue_sensor = queue_sensor("workflow", workflow_execution, _run_config, _tags)
approval_queue_sensor = queue_sensor("approval", workflow_execution, _run_config, _tags)


# -- consumed events from RabbitMQ --------------------------------------------------------------------


def drain_events(engine: Any, url: str, queues: list[str], limit: int = DRAIN_LIMIT) -> dict[str, int]:
    """Take up to `limit` messages from each queue; each is recorded in its own transaction and acked
    after the commit (a crash before the ack redelivers it, and the event's id makes it a duplicate).
    A message that is not a valid event is rejected without requeue (it could never be consumed)."""
    import pika

    counts = {"consumed": 0, "duplicates": 0, "rejected": 0}
    params = pika.URLParameters(url)
    params.socket_timeout = 5.0
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        for queue_name in queues:
            channel.queue_declare(queue=queue_name, durable=True)
            for _ in range(limit):
                method, _properties, body = channel.basic_get(queue=queue_name, auto_ack=False)
                if method is None:
                    break
                try:
                    event = EventIn.model_validate(json.loads(body))
                    with transaction(engine) as session:
                        consumed = consume(session, event, source="amqp", actor=Actor.system("amqp:" + queue_name))
                except (ValueError, ValidationError, UnknownTenant):
                    channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
                    counts["rejected"] += 1
                    continue
                channel.basic_ack(delivery_tag=method.delivery_tag)  # after the commit
                counts["duplicates" if consumed.duplicate else "consumed"] += 1
    finally:
        if connection.is_open:
            connection.close()
    return counts


@dg.sensor(
    name="workflow_events_sensor",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="With RABBITMQ_URL set: drains WORKFLOW_EVENT_QUEUES; each event starts its workflows' executions.",
)
def workflow_events_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    settings = get_settings()
    if settings.rabbitmq_url is None:
        return dg.SensorResult(skip_reason="RABBITMQ_URL is not set: events come through POST /v1/events")
    queues = [q.strip() for q in settings.workflow_event_queues.split(",") if q.strip()]
    counts = drain_events(database.engine, settings.rabbitmq_url.get_secret_value(), queues)
    context.log.info(f"events: {counts}")
    return dg.SensorResult(skip_reason=f"events drained: {counts}")
