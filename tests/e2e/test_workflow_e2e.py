"""A workflow execution through a real dagster-daemon: the `workflow` queue sensor launches
the run, which ends at the approval; the decision's `approval` trigger makes the daemon launch it again,
and the execution completes. Runs on PostgreSQL (SQLite is covered in process)."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import select

from domain import approvals
from domain.models import HitlApproval, QueueState, TriggerQueue
from domain.store import transaction
from tests.orchestration_defs.workflow_helpers import approval, call, new_workflow, start, state, steps
from tests.servers import until


def test_start_approval_decision_completion_through_the_daemon(stack, engine):
    tenant, workflow = new_workflow(
        engine,
        [
            call("score", "ml_service"),
            approval("review", ["score"], ["approver-e2e"]),
            call("apply", "forecasting", ["review"]),
        ],
    )
    execution = start(engine, tenant, workflow)

    until(lambda: state(engine, execution)["status"] == "waiting_approval", "the execution waits for its approval")
    with transaction(engine) as session:
        row = session.scalars(select(HitlApproval).where(HitlApproval.workflow_execution_id == execution)).one()
        assert approvals.decide(
            session, tenant_id=tenant, approval_id=row.id, decision="approve", user_id="approver-e2e"
        ).won

    until(lambda: state(engine, execution)["status"] == "succeeded", "the execution succeeds")
    view = state(engine, execution)
    assert steps(view)["apply"]["status"] == "succeeded"
    assert steps(view)["review"]["output"]["outcome"] == "approve"
    sandbox = stack["sandbox"]
    assert len(sandbox.calls("POST", "/services/ml_service/.*")) == 1
    assert len(sandbox.calls("POST", "/services/forecasting/.*")) == 1

    # two runs of workflow_execution, one per trigger, each acked by the run-status sensor
    def both_done():
        with transaction(engine) as session:
            rows = session.scalars(select(TriggerQueue).where(TriggerQueue.tenant_id == tenant)).all()
        return len(rows) == 2 and all(r.state == QueueState.DONE.value for r in rows) and rows

    rows = until(both_done, "both triggers are done")
    assert sorted(r.kind for r in rows) == ["approval", "workflow"]
    client = stack["graphql"]
    for row in rows:
        assert client.get_run_status(row.run_id) == dg.DagsterRunStatus.SUCCESS
