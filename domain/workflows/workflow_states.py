"""The state machines of workflow executions and their steps: the allowed moves in one table each, one
audited `move()` per row kind, never backwards, refused otherwise."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.core import counters, lifecycle
from domain.core.lifecycle import Actor
from domain.core.models import ExecutionStatus, StepStatus, WorkflowExecution, WorkflowExecutionStep

E = ExecutionStatus
T = StepStatus

EXECUTION_MOVES: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    E.QUEUED: frozenset({E.RUNNING, E.FAILED, E.CANCELLED}),
    E.RUNNING: frozenset({E.WAITING_APPROVAL, E.SUCCEEDED, E.FAILED, E.REJECTED, E.CANCELLED}),
    # A decision (or a timeout's default) resumes the execution, or ends it.
    E.WAITING_APPROVAL: frozenset({E.RUNNING, E.FAILED, E.REJECTED, E.CANCELLED}),
    E.SUCCEEDED: frozenset(),
    E.FAILED: frozenset(),
    E.REJECTED: frozenset(),
    E.CANCELLED: frozenset(),
}
EXECUTION_FINAL = frozenset(s for s, moves in EXECUTION_MOVES.items() if not moves)

STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    # publish steps write their message and succeed in one transaction (pending -> succeeded).
    T.PENDING: frozenset({T.RUNNING, T.WAITING, T.SUCCEEDED, T.FAILED, T.SKIPPED, T.CANCELLED}),
    T.RUNNING: frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED}),
    T.WAITING: frozenset({T.SUCCEEDED, T.REJECTED, T.FAILED, T.CANCELLED}),
    T.SUCCEEDED: frozenset(),
    T.FAILED: frozenset(),
    T.REJECTED: frozenset(),
    T.SKIPPED: frozenset(),
    T.CANCELLED: frozenset(),
}
STEP_FINAL = frozenset(s for s, moves in STEP_MOVES.items() if not moves)


class InvalidMove(Exception):
    def __init__(self, entity: str, entity_id: str, current: str, to: str) -> None:
        super().__init__(f"{entity} {entity_id}: {current} -> {to} is not allowed")
        self.entity, self.entity_id, self.current, self.to = entity, entity_id, current, to


def move_execution(
    session: Session,
    execution: WorkflowExecution,
    to: ExecutionStatus,
    *,
    actor: Actor,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    current = ExecutionStatus(execution.status)
    if to not in EXECUTION_MOVES[current]:
        raise InvalidMove("workflow execution", execution.id, current.value, to.value)
    now = datetime.now(UTC)
    execution.status = to.value
    execution.updated_at = now
    if to is E.RUNNING and execution.started_at is None:
        execution.started_at = now
    if to in EXECUTION_FINAL:
        execution.finished_at = now
        if reason and to is not E.SUCCEEDED:
            execution.error = reason[:4000]
        counters.count(session, "workflow_executions_finished", {"status": to.value})
    _audit(
        session,
        execution.tenant_id,
        "workflow_executions",
        execution.id,
        current.value,
        to.value,
        actor,
        reason,
        metadata,
    )


def move_step(
    session: Session,
    step: WorkflowExecutionStep,
    to: StepStatus,
    *,
    actor: Actor,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    current = StepStatus(step.status)
    if to not in STEP_MOVES[current]:
        raise InvalidMove("workflow execution step", step.id, current.value, to.value)
    now = datetime.now(UTC)
    step.status = to.value
    step.updated_at = now
    if to in (T.RUNNING, T.WAITING) and step.started_at is None:
        step.started_at = now
    if to in STEP_FINAL:
        step.finished_at = now
        if step.started_at is None and to in (T.SUCCEEDED, T.FAILED):
            step.started_at = now
    meta = {"execution_id": step.workflow_execution_id, "step": step.name} | dict(metadata or {})
    _audit(session, step.tenant_id, "workflow_execution_steps", step.id, current.value, to.value, actor, reason, meta)


def _audit(
    session: Session,
    tenant_id: str,
    entity_type: str,
    entity_id: str,
    previous: str,
    new: str,
    actor: Actor,
    reason: str | None,
    metadata: dict[str, Any] | None,
) -> None:
    entry = lifecycle.record(
        session,
        tenant_id=tenant_id,
        entity_type=entity_type,
        entity_id=entity_id,
        action="status_change",
        actor=actor,
        reason=(reason or None) and reason[:1000],
        metadata=metadata,
    )
    entry.previous_status = previous
    entry.new_status = new
