"""Workflows and their executions in the store: definitions (versioned), starting an execution (its step
rows and its `workflow` trigger in one transaction), cancelling one, and the views the API returns.

The engine that runs an execution lives in domain.workflows.workflow_engine; the Dagster job that calls it in
orchestration_defs/workflows.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.core import lifecycle
from domain.core.lifecycle import Actor
from domain.core.models import (
    ExecutionStatus,
    StepStatus,
    Workflow,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowExecutionStep,
    WorkflowStep,
)
from domain.queue import queue
from domain.workflows import approvals
from domain.workflows.workflow_definitions import WorkflowSpec, step_config
from domain.workflows.workflow_states import EXECUTION_FINAL, move_execution, move_step

TRIGGER_KIND = "workflow"


class NameTaken(Exception):
    pass


class NotCancellable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"the execution is {status}")
        self.status = status


# -- definitions -----------------------------------------------------------------------------------------


def _add_version(
    session: Session, workflow: Workflow, spec: WorkflowSpec, version: int, actor: Actor
) -> WorkflowDefinition:
    definition = WorkflowDefinition(
        tenant_id=workflow.tenant_id,
        workflow_id=workflow.id,
        name=spec.name,
        version=version,
        description=spec.description,
        trigger_on=list(spec.trigger_on),
        created_by=actor.id,
    )
    session.add(definition)
    session.flush()
    for position, step in enumerate(spec.steps):
        session.add(
            WorkflowStep(
                tenant_id=workflow.tenant_id,
                workflow_definition_id=definition.id,
                position=position,
                name=step.name,
                kind=step.kind,
                depends_on=list(step.depends_on),
                config=step_config(step),
            )
        )
    session.flush()
    return definition


def _name_taken(session: Session, tenant_id: str, name: str, but: str | None = None) -> bool:
    """Another workflow of the tenant has the name now or had it in one of its versions: every version
    keeps its name, unique per tenant and version number, so a name another workflow left stays its."""
    current = select(Workflow.id).where(Workflow.tenant_id == tenant_id, Workflow.name == name)
    former = select(WorkflowDefinition.workflow_id).where(
        WorkflowDefinition.tenant_id == tenant_id, WorkflowDefinition.name == name
    )
    if but is not None:
        current = current.where(Workflow.id != but)
        former = former.where(WorkflowDefinition.workflow_id != but)
    return session.scalar(current.limit(1)) is not None or session.scalar(former.limit(1)) is not None


def create_workflow(
    session: Session, tenant_id: str, spec: WorkflowSpec, actor: Actor, workflow_id: str | None = None
) -> Workflow:
    if _name_taken(session, tenant_id, spec.name):
        raise NameTaken(spec.name)
    workflow = Workflow(tenant_id=tenant_id, name=spec.name, active=spec.active, latest_version=1, created_by=actor.id)
    if workflow_id is not None:
        workflow.id = workflow_id  # the demo's fixed id
    session.add(workflow)
    session.flush()
    _add_version(session, workflow, spec, 1, actor)
    lifecycle.record(
        session,
        tenant_id=tenant_id,
        entity_type="workflows",
        entity_id=workflow.id,
        action="workflow_created",
        actor=actor,
        metadata={"version": 1, "name": spec.name},
    )
    return workflow


def update_workflow(session: Session, workflow: Workflow, spec: WorkflowSpec, actor: Actor) -> Workflow:
    """A new version; executions keep the version they started with."""
    if _name_taken(session, workflow.tenant_id, spec.name, but=workflow.id):
        raise NameTaken(spec.name)
    version = workflow.latest_version + 1
    _add_version(session, workflow, spec, version, actor)
    workflow.latest_version = version
    workflow.name = spec.name
    workflow.active = spec.active
    lifecycle.record(
        session,
        tenant_id=workflow.tenant_id,
        entity_type="workflows",
        entity_id=workflow.id,
        action="workflow_versioned",
        actor=actor,
        metadata={"version": version, "name": spec.name},
    )
    return workflow


def find_workflow(session: Session, tenant_id: str, workflow_id: str, *, for_update: bool = False) -> Workflow | None:
    query = select(Workflow).where(Workflow.tenant_id == tenant_id, Workflow.id == workflow_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def definition_of(session: Session, workflow: Workflow, version: int | None = None) -> WorkflowDefinition:
    return session.scalars(
        select(WorkflowDefinition).where(
            WorkflowDefinition.workflow_id == workflow.id,
            WorkflowDefinition.version == (version or workflow.latest_version),
        )
    ).one()


def steps_of(session: Session, definition: WorkflowDefinition) -> list[WorkflowStep]:
    return list(
        session.scalars(
            select(WorkflowStep)
            .where(WorkflowStep.workflow_definition_id == definition.id)
            .order_by(WorkflowStep.position)
        ).all()
    )


def workflow_view(session: Session, workflow: Workflow, version: int | None = None) -> dict[str, Any]:
    definition = definition_of(session, workflow, version)
    return {
        "id": workflow.id,
        "tenant_id": workflow.tenant_id,
        "name": definition.name,
        "description": definition.description,
        "version": definition.version,
        "latest_version": workflow.latest_version,
        "active": workflow.active,
        "trigger_on": list(definition.trigger_on),
        "steps": [
            {"name": s.name, "kind": s.kind, "depends_on": list(s.depends_on), **_public_config(s.kind, s.config)}
            for s in steps_of(session, definition)
        ],
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
    }


def _public_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not (kind == "approval" and k == "timeout_s")}


def list_workflows(session: Session, tenant_id: str, *, limit: int, offset: int) -> tuple[list[Workflow], int]:
    base = select(Workflow).where(Workflow.tenant_id == tenant_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(base.order_by(Workflow.created_at.desc(), Workflow.id).limit(limit).offset(offset)).all()
    return list(rows), int(total)


def triggered_by(session: Session, tenant_id: str, event_type: str) -> list[Workflow]:
    """The tenant's active workflows whose current version's `trigger_on` names `event_type`."""
    rows = session.execute(
        select(Workflow, WorkflowDefinition.trigger_on)
        .join(
            WorkflowDefinition,
            (WorkflowDefinition.workflow_id == Workflow.id) & (WorkflowDefinition.version == Workflow.latest_version),
        )
        .where(Workflow.tenant_id == tenant_id, Workflow.active.is_(True))
        .order_by(Workflow.created_at, Workflow.id)
    ).all()
    return [workflow for workflow, trigger_on in rows if event_type in (trigger_on or [])]


# -- executions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    execution: WorkflowExecution
    trigger_id: int | None
    new: bool


def start_execution(
    session: Session,
    workflow: Workflow,
    *,
    input: dict[str, Any],
    actor: Actor,
    trigger: dict[str, Any],
    dedup_key: str | None = None,
) -> Started:
    """An execution of the workflow's current version, queued: its steps (pending) and a `workflow`
    trigger, in the caller's transaction. With a dedup key the tenant already used, that execution is returned."""
    if dedup_key is not None:
        existing = session.scalars(
            select(WorkflowExecution).where(
                WorkflowExecution.tenant_id == workflow.tenant_id, WorkflowExecution.dedup_key == dedup_key
            )
        ).one_or_none()
        if existing is not None:
            return Started(existing, None, False)
    definition = definition_of(session, workflow)
    execution = WorkflowExecution(
        tenant_id=workflow.tenant_id,
        workflow_definition_id=definition.id,
        workflow_id=workflow.id,
        version=definition.version,
        status=ExecutionStatus.QUEUED.value,
        input=dict(input),
        trigger=dict(trigger),
        dedup_key=dedup_key,
        requested_by=actor.id,
    )
    session.add(execution)
    session.flush()
    for step in steps_of(session, definition):
        session.add(
            WorkflowExecutionStep(
                tenant_id=workflow.tenant_id,
                workflow_execution_id=execution.id,
                position=step.position,
                name=step.name,
                kind=step.kind,
                depends_on=list(step.depends_on),
                config=dict(step.config),
                status=StepStatus.PENDING.value,
                attempts=0,
            )
        )
    lifecycle.record(
        session,
        tenant_id=workflow.tenant_id,
        entity_type="workflow_executions",
        entity_id=execution.id,
        action="execution_requested",
        actor=actor,
        metadata={"workflow_id": workflow.id, "version": definition.version, "trigger": dict(trigger)},
    )
    trigger_id = enqueue_run(session, execution)
    return Started(execution, trigger_id, True)


def enqueue_run(session: Session, execution: WorkflowExecution) -> int:
    """A `workflow` trigger: its sensor launches the job `workflow_execution`, which resumes from the store."""
    return queue.enqueue(
        session,
        TRIGGER_KIND,
        execution.tenant_id,
        {"tenant_id": execution.tenant_id, "workflow_execution_id": execution.id, "workflow_id": execution.workflow_id},
        dedup_key=f"workflow:{execution.id}",
    )


def find_execution(
    session: Session, tenant_id: str, execution_id: str, *, for_update: bool = False
) -> WorkflowExecution | None:
    query = select(WorkflowExecution).where(
        WorkflowExecution.tenant_id == tenant_id, WorkflowExecution.id == execution_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def execution_steps(session: Session, execution_id: str, *, for_update: bool = False) -> list[WorkflowExecutionStep]:
    query = (
        select(WorkflowExecutionStep)
        .where(WorkflowExecutionStep.workflow_execution_id == execution_id)
        .order_by(WorkflowExecutionStep.position)
    )
    if for_update:
        query = query.with_for_update()
    return list(session.scalars(query).all())


def cancel_execution(session: Session, execution: WorkflowExecution, actor: Actor) -> WorkflowExecution:
    """queued / running / waiting_approval -> cancelled: steps not finished are cancelled, open approvals
    too. A run still going stops at its next step; a call in flight is not recorded as the step's result."""
    if ExecutionStatus(execution.status) in EXECUTION_FINAL:
        raise NotCancellable(execution.status)
    move_execution(session, execution, ExecutionStatus.CANCELLED, actor=actor, reason="cancelled")
    for step in execution_steps(session, execution.id):
        if step.status in (StepStatus.PENDING.value, StepStatus.RUNNING.value, StepStatus.WAITING.value):
            move_step(session, step, StepStatus.CANCELLED, actor=actor, reason="execution cancelled")

    approvals.cancel_for_execution(
        session, tenant_id=execution.tenant_id, workflow_execution_id=execution.id, actor=actor.id
    )
    return execution


def progress(steps: Sequence[WorkflowExecutionStep]) -> dict[str, int]:
    done = {StepStatus.SUCCEEDED.value, StepStatus.REJECTED.value}
    return {
        "total": len(steps),
        "done": sum(s.status in done for s in steps),
        "failed": sum(s.status == StepStatus.FAILED.value for s in steps),
        "waiting": sum(s.status == StepStatus.WAITING.value for s in steps),
    }


def step_view(step: WorkflowExecutionStep) -> dict[str, Any]:
    return {
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "attempts": step.attempts,
        "depends_on": list(step.depends_on),
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "output": step.output,
        "error": step.error,
    }


def execution_view(execution: WorkflowExecution, steps: Sequence[WorkflowExecutionStep] | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": execution.id,
        "execution_id": execution.id,
        "tenant_id": execution.tenant_id,
        "workflow_id": execution.workflow_id,
        "version": execution.version,
        "status": execution.status,
        "input": execution.input,
        "trigger": execution.trigger,
        "error": execution.error,
        "dagster_run_id": execution.dagster_run_id,
        "created_at": execution.created_at,
        "started_at": execution.started_at,
        "finished_at": execution.finished_at,
    }
    if steps is not None:
        view["progress"] = progress(steps)
        view["steps"] = [step_view(s) for s in steps]
    return view


def list_executions(
    session: Session,
    tenant_id: str,
    *,
    statuses: Iterable[str] = (),
    workflow_id: str | None = None,
    limit: int,
    offset: int,
) -> tuple[list[tuple[WorkflowExecution, list[WorkflowExecutionStep]]], int]:
    base = select(WorkflowExecution).where(WorkflowExecution.tenant_id == tenant_id)
    wanted = list(statuses)
    if wanted:
        base = base.where(WorkflowExecution.status.in_(wanted))
    if workflow_id:
        base = base.where(WorkflowExecution.workflow_id == workflow_id)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = list(
        session.scalars(
            base.order_by(WorkflowExecution.created_at.desc(), WorkflowExecution.id).limit(limit).offset(offset)
        ).all()
    )
    steps: dict[str, list[WorkflowExecutionStep]] = {row.id: [] for row in rows}
    if rows:
        for step in session.scalars(
            select(WorkflowExecutionStep)
            .where(WorkflowExecutionStep.workflow_execution_id.in_(list(steps)))
            .order_by(WorkflowExecutionStep.position)
        ):
            steps[step.workflow_execution_id].append(step)
    return [(row, steps[row.id]) for row in rows], int(total)


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
