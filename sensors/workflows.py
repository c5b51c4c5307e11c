"""The workflows area's sensors: the `workflow` and `approval` queue sensors (a new execution; a decision
or a timeout's default resumes one), the AMQP events consumer, and the approvals' sweeper.

With RABBITMQ_URL set, `workflow_events_sensor` drains the event queues (WORKFLOW_EVENT_QUEUES): each
message is recorded (and its executions queued) in one transaction, and acked only after the commit.
"""

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from domain.core.errors import UnknownTenant
from domain.core.lifecycle import Actor
from domain.core.models import ApprovalStatus, HitlApproval
from domain.core.settings import get_settings
from domain.core.store import read_transaction, transaction
from domain.workflows import approval_callbacks, approvals
from domain.workflows.workflow_events import EventIn, consume
from orchestration_defs.approvals import approval_sweeper
from orchestration_defs.workflows import TAG_EXECUTION, TAG_WORKFLOW, workflow_execution
from resources import amqp
from resources.dagster_resources import DatabaseResource
from sensors.due_work import due_work_sensor
from sensors.queue import queue_sensor

DRAIN_LIMIT = 500  # messages per sensor tick and queue: a tick stays well inside the sensor's timeout


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


def drain_events(engine: Engine, url: str, queues: list[str], limit: int = DRAIN_LIMIT) -> dict[str, int]:
    """Take up to `limit` messages from each queue; each is recorded in its own transaction and acked
    after the commit (a crash before the ack redelivers it, and the event's id makes it a duplicate).
    A message that is not a valid event is rejected without requeue (it could never be consumed)."""

    def record(queue_name: str, body: bytes) -> str:
        try:
            event = EventIn.model_validate(json.loads(body))
            with transaction(engine) as session:
                consumed = consume(session, event, source="amqp", actor=Actor.system("amqp:" + queue_name))
        except (ValueError, ValidationError, UnknownTenant) as exc:
            raise amqp.Rejected(str(exc)) from exc
        return "duplicates" if consumed.duplicate else "consumed"

    counts = amqp.drain(url, queues, record, limit=limit)
    return {outcome: counts[outcome] for outcome in ("consumed", "duplicates", "rejected")}


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


# -- the approvals' sweeper -----------------------------------------------------------------------------


def work_waiting(resources: Any) -> dict[str, int]:
    """Overdue pending approvals, and due callbacks."""
    with read_transaction(resources.database.engine) as session:
        now = approvals.now_utc()
        overdue = session.scalar(
            select(func.count())
            .select_from(HitlApproval)
            .where(HitlApproval.status == ApprovalStatus.PENDING.value, HitlApproval.expires_at <= now)
        )
        return {"wrk/overdue": int(overdue or 0), "wrk/callbacks": approval_callbacks.due_count(session, now)}


approval_sweeper_sensor = due_work_sensor(
    approval_sweeper,
    work_waiting,
    name="approval_sweeper_sensor",
    minimum_interval_seconds=get_settings().sensor_interval_seconds,
    busy="an approval sweep is in flight",
    nothing_due="no overdue approval, no due callback",
    description="Launches an approval sweep when approvals are overdue or callbacks are due, none in flight.",
)
