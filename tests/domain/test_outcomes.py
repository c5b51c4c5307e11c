"""What counts as a trigger's recorded outcome, kind by kind: the evidence without which a run's success
does not make its trigger done (orchestration_defs/trigger_runs.py on_success)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy.orm import Session

from domain.core.lifecycle import Actor
from domain.core.models import (
    ExecutionStatus,
    HitlApproval,
    PhaseAudit,
    PhaseOutcome,
    ReleaseBuild,
    StepStatus,
    WorkflowExecutionStep,
)
from domain.core.store import transaction
from domain.queue import outcomes, queue
from domain.queue.triggers import KINDS
from domain.workflows.workflow_states import move_execution, move_step
from tests.domain import factories

ACTOR = Actor.system("tests")


@pytest.fixture
def tenant_id(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def _trigger(session: Session, kind: str, tenant_id: str | None, payload: dict) -> queue.Trigger:
    row_id = queue.enqueue(session, kind, tenant_id, payload)
    found = queue.find(session, row_id)
    assert found is not None
    return found


def test_every_kind_the_queue_carries_says_what_its_outcome_is():
    assert set(outcomes.OUTCOMES) == set(KINDS)


def test_a_phase_trigger_is_recorded_by_its_completed_audit_row_only(engine, tenant_id):
    with transaction(engine) as session:
        payload = {"tenant_id": tenant_id, "user_id": "u", "sync_id": "s", "phase": 1, "input": {}}
        trigger, other = _trigger(session, "phase", tenant_id, payload), _trigger(session, "phase", tenant_id, payload)

        def audit(trigger_id: int, outcome: PhaseOutcome) -> None:
            now = dt.datetime.now(dt.UTC)
            session.add(
                PhaseAudit(
                    tenant_id=tenant_id, user_id="u", sync_id="s", phase=1, trigger_id=trigger_id,
                    outcome=outcome.value, duration_s=0.0, details={}, started_at=now, finished_at=now,
                )
            )  # fmt: skip
            session.flush()

        audit(trigger.id, PhaseOutcome.FAILED)  # a failed attempt is not its outcome
        audit(other.id, PhaseOutcome.COMPLETED)  # nor another trigger's completion in the same sync
        assert not outcomes.recorded(session, trigger)
        audit(trigger.id, PhaseOutcome.COMPLETED)
        assert outcomes.recorded(session, trigger)


def test_a_build_trigger_is_recorded_once_its_workflow_is_or_its_version_stopped_waiting(engine, tenant_id):
    with transaction(engine) as session:
        waiting = _trigger(session, "build", tenant_id, factories.build_trigger(session, tenant_id, built=False))
        built = _trigger(session, "build", tenant_id, factories.build_trigger(session, tenant_id, built=True))
        assert not outcomes.recorded(session, waiting)
        assert outcomes.recorded(session, built)


def test_a_release_trigger_is_recorded_once_its_release_succeeded(engine):
    with transaction(engine) as session:
        tag = f"v1.0.{uuid.uuid4().int % 1000}"
        trigger = _trigger(session, "release", None, {"tag": tag})
        assert not outcomes.recorded(session, trigger)  # no release build yet
        release = ReleaseBuild(tag=tag, name=tag, status="running")
        session.add(release)
        session.flush()
        assert not outcomes.recorded(session, trigger)
        release.status = "succeeded"
        session.flush()
        assert outcomes.recorded(session, trigger)


def test_a_workflow_trigger_is_recorded_once_its_execution_is_settled_and_an_approval_once_applied(engine, tenant_id):
    with transaction(engine) as session:
        execution = factories.workflow_execution(session, tenant_id)
        step = WorkflowExecutionStep(
            tenant_id=tenant_id, workflow_execution_id=execution.id, position=0, name="approve", kind="approval"
        )
        session.add(step)
        approval = HitlApproval(
            tenant_id=tenant_id,
            workflow_execution_id=execution.id,
            step_name="approve",
            requested_by="tests",
            message="ok?",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            on_timeout="reject",
        )
        session.add(approval)
        session.flush()
        run = _trigger(session, "workflow", tenant_id, {"tenant_id": tenant_id, "workflow_execution_id": execution.id})
        decided = _trigger(
            session,
            "approval",
            tenant_id,
            {
                "tenant_id": tenant_id,
                "hitl_approval_id": approval.id,
                "workflow_execution_id": execution.id,
                "outcome": "approve",
            },
        )
        assert not outcomes.recorded(session, run)  # queued
        move_execution(session, execution, ExecutionStatus.RUNNING, actor=ACTOR)
        assert not outcomes.recorded(session, run)
        move_step(session, step, StepStatus.WAITING, actor=ACTOR)
        move_execution(session, execution, ExecutionStatus.WAITING_APPROVAL, actor=ACTOR)
        assert outcomes.recorded(session, run)  # as far as it goes now
        assert not outcomes.recorded(session, decided)  # the decision is not applied yet
        move_step(session, step, StepStatus.SUCCEEDED, actor=ACTOR)
        move_execution(session, execution, ExecutionStatus.RUNNING, actor=ACTOR)
        assert not outcomes.recorded(session, decided)  # applied, but the execution was left running
        move_execution(session, execution, ExecutionStatus.SUCCEEDED, actor=ACTOR)
        assert outcomes.recorded(session, decided) and outcomes.recorded(session, run)
