"""Helpers for the workflow tests: definitions, starting executions, and driving them the way the daemon
does (queue sensor tick -> RunRequest -> the job in process)."""

from __future__ import annotations

from typing import Any

import dagster as dg
from sqlalchemy import select

from domain.core.lifecycle import Actor
from domain.core.models import AuditLog, WorkflowExecution
from domain.core.store import transaction
from domain.workflows import workflows
from domain.workflows.workflow_definitions import parse
from orchestration_defs.workflows import workflow_execution
from resources.dagster_resources import DatabaseResource, ServicesResource
from sensors.workflows import approval_queue_sensor, workflow_queue_sensor
from tests.domain import factories

USER = Actor.user("ops-1")


def call(name: str, service: str = "risk_analytics", depends_on: list[str] | None = None, body: Any = None) -> dict:
    return {
        "name": name,
        "kind": "service_call",
        "service": service,
        "method": "POST",
        "path": f"/v1/{name}",
        "body": body if body is not None else {"account": {"$ref": "/input/account_id"}},
        "depends_on": depends_on or [],
        "timeout_s": 5,
    }


def approval(name: str, depends_on: list[str], assignees: list[str], **extra: Any) -> dict:
    return {
        "name": name,
        "kind": "approval",
        "assignees": assignees,
        "message": "Approve?",
        "timeout": "PT1H",
        "depends_on": depends_on,
        **extra,
    }


def publish(name: str, depends_on: list[str], queue: str = "workflow_results") -> dict:
    return {
        "name": name,
        "kind": "publish",
        "queue": queue,
        "body": {"account": {"$ref": "/input/account_id"}},
        "depends_on": depends_on,
    }


def new_workflow(engine, steps: list[dict], tenant_id: str | None = None, **extra: Any) -> tuple[str, str]:
    """(tenant id, workflow id)."""
    with transaction(engine) as session:
        tenant = tenant_id or factories.tenant(session).id
        spec = parse({"name": f"wf-{len(steps)}-{id(steps)}", "steps": steps, **extra})
        return tenant, workflows.create_workflow(session, tenant, spec, USER).id


def start(engine, tenant_id: str, workflow_id: str, input: dict | None = None) -> str:
    with transaction(engine) as session:
        workflow = workflows.find_workflow(session, tenant_id, workflow_id)
        assert workflow is not None
        started = workflows.start_execution(
            session, workflow, input=input or {"account_id": "acc-1"}, actor=USER, trigger={"source": "test"}
        )
        return started.execution.id


def resources(database_url: str) -> dict[str, Any]:
    return {"database": DatabaseResource(url=database_url), "services": ServicesResource()}


def tick(instance, database_url: str) -> list[dg.RunRequest]:
    """One tick of the workflow and approval queue sensors (they claim their triggers)."""
    requests: list[dg.RunRequest] = []
    for sensor in (workflow_queue_sensor, approval_queue_sensor):
        context = dg.build_sensor_context(
            instance=instance, resources={"database": DatabaseResource(url=database_url)}, sensor_name=sensor.name
        )
        requests.extend(sensor.evaluate_tick(context).run_requests or [])
    return requests


def run_request(instance, database_url: str, request: dg.RunRequest, raise_on_error: bool = True):
    return workflow_execution.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        resources=resources(database_url),
        tags=request.tags,
        raise_on_error=raise_on_error,
    )


def drive(instance, database_url: str) -> int:
    """Launch every due trigger's run as the daemon would; returns how many runs ran."""
    ran = 0
    for request in tick(instance, database_url):
        run_request(instance, database_url, request)
        ran += 1
    return ran


def run_directly(instance, database_url: str, execution_id: str, raise_on_error: bool = True):
    """A launch (or re-execution) from the UI: only the execution id."""
    return workflow_execution.execute_in_process(
        run_config={"ops": {"run_workflow_execution": {"config": {"workflow_execution_id": execution_id}}}},
        instance=instance,
        resources=resources(database_url),
        raise_on_error=raise_on_error,
    )


def state(engine, execution_id: str) -> dict[str, Any]:
    with transaction(engine) as session:
        execution = session.get(WorkflowExecution, execution_id)
        assert execution is not None
        return workflows.execution_view(execution, workflows.execution_steps(session, execution_id))


def steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def audit_moves(engine, entity_id: str) -> list[tuple[str | None, str | None]]:
    with transaction(engine) as session:
        rows = session.scalars(
            select(AuditLog)
            .where(AuditLog.entity_id == entity_id, AuditLog.action == "status_change")
            .order_by(AuditLog.id)
        ).all()
        return [(r.previous_status, r.new_status) for r in rows]
