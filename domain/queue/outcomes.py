"""What counts as a trigger's recorded outcome, per kind: the evidence a trigger is done.

A run's success is no evidence: a step delivered twice (Celery acks late), or a run whose rows were
held elsewhere, succeeds having done nothing. So a run-status reaction (`on_success`,
orchestration_defs/trigger_runs.py) acks a trigger done only when `recorded` finds the trigger's outcome
in the store; a run that succeeded without it fails the trigger, saying so (retried with backoff, or dead
and alerted).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.core.lifecycle import Status
from domain.core.models import (
    AutomationVersion,
    BuildStatus,
    ExecutionStatus,
    HitlApproval,
    PhaseAudit,
    PhaseOutcome,
    ReleaseBuild,
    StepStatus,
    WorkflowBinding,
    WorkflowExecution,
    WorkflowExecutionStep,
)
from domain.queue.queue import Trigger

# An execution a run left queued or running was not taken as far as it can go (finished, or waiting).
UNSETTLED = (ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value)


def recorded(session: Session, trigger: Trigger) -> bool:
    """True when the store holds the outcome of `trigger` (its kind says what that is)."""
    return OUTCOMES[trigger.kind](session, trigger)


def _phase(session: Session, trigger: Trigger) -> bool:
    """Its `completed` phase audit row, written in the transaction that acks it (domain/phases/phases.py)."""
    p = trigger.payload
    found = session.scalar(
        select(PhaseAudit.id)
        .where(
            PhaseAudit.tenant_id == p["tenant_id"],  # the (tenant, user, sync) index finds the few rows
            PhaseAudit.user_id == p["user_id"],
            PhaseAudit.sync_id == p["sync_id"],
            PhaseAudit.trigger_id == trigger.id,
            PhaseAudit.outcome == PhaseOutcome.COMPLETED.value,
        )
        .limit(1)
    )
    return found is not None


def _build(session: Session, trigger: Trigger) -> bool:
    """Its binding holds the platform's workflow (recorded), or the version is no longer waiting for a
    build (the run found it elsewhere and left it alone, saying why)."""
    version = session.get(AutomationVersion, trigger.payload["automation_version_id"])
    binding = session.get(WorkflowBinding, trigger.payload["workflow_binding_id"])
    if version is None or binding is None:
        return False
    return version.status != Status.BUILD_IN_PROGRESS.value or binding.wrk_workflow_id is not None


def _release(session: Session, trigger: Trigger) -> bool:
    """Its release build succeeded (published)."""
    status = session.scalar(select(ReleaseBuild.status).where(ReleaseBuild.tag == trigger.payload["tag"]))
    return status == BuildStatus.SUCCEEDED.value


def _execution_settled(session: Session, execution_id: str) -> bool:
    execution = session.get(WorkflowExecution, execution_id)
    return execution is not None and execution.status not in UNSETTLED


def _workflow(session: Session, trigger: Trigger) -> bool:
    """Its execution was taken as far as it goes now: finished, or waiting for an approval."""
    return _execution_settled(session, trigger.payload["workflow_execution_id"])


def _approval(session: Session, trigger: Trigger) -> bool:
    """The decision was applied: the approval's step no longer waits, and the execution is settled."""
    approval = session.get(HitlApproval, trigger.payload["hitl_approval_id"])
    if approval is None or not _execution_settled(session, trigger.payload["workflow_execution_id"]):
        return False
    step_status = session.scalar(
        select(WorkflowExecutionStep.status).where(
            WorkflowExecutionStep.workflow_execution_id == approval.workflow_execution_id,
            WorkflowExecutionStep.name == approval.step_name,
        )
    )
    return step_status != StepStatus.WAITING.value


OUTCOMES: Mapping[str, Callable[[Session, Trigger], bool]] = {
    "phase": _phase,
    "build": _build,
    "release": _release,
    "workflow": _workflow,
    "approval": _approval,
}
