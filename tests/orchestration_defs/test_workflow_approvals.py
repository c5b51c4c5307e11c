"""Approval steps inside the engine: the run ends while a person decides; the decision's
`approval` trigger launches the job again, which applies the outcome. In process, both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from domain.core.lifecycle import Actor
from domain.core.models import HitlApproval, Notification, TriggerQueue
from domain.core.store import transaction
from domain.workflows import approvals, workflows
from tests.orchestration_defs.workflow_helpers import (
    approval,
    audit_moves,
    call,
    drive,
    new_workflow,
    publish,
    run_directly,
    start,
    state,
    steps,
)


def _approval(engine, execution_id: str, step: str = "review") -> HitlApproval:
    with transaction(engine) as session:
        return session.scalars(
            select(HitlApproval).where(
                HitlApproval.workflow_execution_id == execution_id, HitlApproval.step_name == step
            )
        ).one()


def _decide(engine, tenant: str, approval_id: str, decision: str, user: str = "approver-1") -> None:
    with transaction(engine) as session:
        decided = approvals.decide(
            session, tenant_id=tenant, approval_id=approval_id, decision=decision, user_id=user, comment="looked at it"
        )
        assert decided.won


def _review_workflow(engine, **approval_fields):
    return new_workflow(
        engine,
        [
            call("score", "ml_service"),
            approval("review", ["score"], ["approver-1"], **approval_fields),
            call("apply", "recommendations", ["review"]),
            publish("announce", ["apply"]),
        ],
    )


def test_approve_resumes_the_execution_at_the_next_step(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _review_workflow(engine)
    execution = start(engine, tenant, workflow)
    assert drive(instance, database_url) == 1
    view = state(engine, execution)
    assert view["status"] == "waiting_approval"
    assert view["progress"] == {"total": 4, "done": 1, "failed": 0, "waiting": 1}
    assert steps(view)["review"]["status"] == "waiting"
    assert steps(view)["apply"]["status"] == "pending"
    row = _approval(engine, execution)
    assert row.status == "pending" and row.assignees == ["approver-1"] and row.message == "Approve?"
    assert steps(view)["review"]["output"] == {"approval_id": row.id}
    # the run ended: nothing is launched until someone decides
    assert drive(instance, database_url) == 0
    with transaction(engine) as session:
        notes = session.scalars(select(Notification).where(Notification.recipient == "approver-1")).all()
    assert notes  # in-app notification for the assignee (hitl's outbox)

    _decide(engine, tenant, row.id, "approve")
    assert drive(instance, database_url) == 1  # the approval trigger's run
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    by_name = steps(view)
    assert by_name["review"]["status"] == "succeeded"
    assert by_name["review"]["output"]["outcome"] == "approve"
    assert by_name["review"]["output"]["decided_by"] == "approver-1"
    assert by_name["apply"]["status"] == "succeeded" and by_name["announce"]["status"] == "succeeded"
    assert by_name["apply"]["started_at"] >= row.created_at
    assert audit_moves(engine, execution) == [
        ("queued", "running"),
        ("running", "waiting_approval"),
        ("waiting_approval", "running"),
        ("running", "succeeded"),
    ]
    # the score step ran once across both runs
    assert len(sandbox.calls("POST", "/services/ml_service/.*")) == 1


def test_reject_with_stop_ends_the_execution_rejected(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _review_workflow(engine)
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    _decide(engine, tenant, _approval(engine, execution).id, "reject")
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "rejected"
    by_name = steps(view)
    assert by_name["review"]["status"] == "rejected"
    assert by_name["apply"]["status"] == "skipped" and by_name["announce"]["status"] == "skipped"
    assert sandbox.calls("POST", "/services/recommendations/.*") == []
    assert "review" in view["error"]


def test_reject_with_continue_goes_on_to_the_next_steps(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _review_workflow(engine, on_reject="continue")
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    _decide(engine, tenant, _approval(engine, execution).id, "reject")
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    by_name = steps(view)
    assert by_name["review"]["status"] == "rejected"
    assert by_name["review"]["output"]["outcome"] == "reject"
    assert by_name["apply"]["status"] == "succeeded"
    assert len(sandbox.calls("POST", "/services/recommendations/.*")) == 1


@pytest.mark.parametrize(
    ("on_timeout", "status", "review"),
    [("approve", "succeeded", "succeeded"), ("reject", "rejected", "rejected"), ("fail", "failed", "failed")],
)
def test_a_timeout_applies_its_default_to_the_execution(
    wf_env, engine, database_url, instance, sandbox, on_timeout, status, review
):
    tenant, workflow = _review_workflow(engine, on_timeout=on_timeout)
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    row = _approval(engine, execution)
    with transaction(engine) as session:
        expired = approvals.expire_overdue(session, now=row.expires_at + dt.timedelta(seconds=1))
    assert [r.id for r in expired] == [row.id]
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == status
    assert steps(view)["review"]["status"] == review
    assert steps(view)["review"]["output"]["status"] == "expired"


def test_cancel_stops_a_waiting_execution_and_cancels_its_approval(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _review_workflow(engine)
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    with transaction(engine) as session:
        row = workflows.find_execution(session, tenant, execution)
        workflows.cancel_execution(session, row, Actor.user("ops-1"))
    view = state(engine, execution)
    assert view["status"] == "cancelled"
    assert {s["name"]: s["status"] for s in view["steps"]} == {
        "score": "succeeded",
        "review": "cancelled",
        "apply": "cancelled",
        "announce": "cancelled",
    }
    assert _approval(engine, execution).status == "cancelled"
    # a late run (a re-execution from the UI) changes nothing and calls nothing
    before = len(sandbox.calls())
    assert run_directly(instance, database_url, execution).success
    assert state(engine, execution)["status"] == "cancelled"
    assert len(sandbox.calls()) == before
    with pytest.raises(workflows.NotCancellable), transaction(engine) as session:
        workflows.cancel_execution(session, workflows.find_execution(session, tenant, execution), Actor.user("x"))


def test_cancel_of_a_queued_execution_means_its_run_does_nothing(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = new_workflow(engine, [call("score")])
    execution = start(engine, tenant, workflow)
    with transaction(engine) as session:
        workflows.cancel_execution(session, workflows.find_execution(session, tenant, execution), Actor.user("ops-1"))
    assert drive(instance, database_url) == 1
    assert state(engine, execution)["status"] == "cancelled"
    assert sandbox.calls("POST", "/services/.*") == []


def test_a_re_executed_approval_step_opens_no_second_approval(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _review_workflow(engine)
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    assert run_directly(instance, database_url, execution).success  # a re-execution from the UI
    with transaction(engine) as session:
        rows = session.scalars(select(HitlApproval).where(HitlApproval.workflow_execution_id == execution)).all()
        triggers = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "approval")).all()
    assert len(rows) == 1 and triggers == []
    assert state(engine, execution)["status"] == "waiting_approval"


REVIEW_FIELDS = [
    {"name": "amount", "type": "number", "required": True},
    {"name": "region", "type": "choice", "options": ["eu", "日本"], "default": "eu"},
]


def _fields_workflow(engine, on_timeout: str = "reject"):
    return new_workflow(
        engine,
        [
            call("score", "ml_service"),
            approval("review", ["score"], ["approver-1"], fields=REVIEW_FIELDS, on_timeout=on_timeout),
            call(
                "apply",
                "recommendations",
                ["review"],
                body={
                    "amount": {"$ref": "/steps/review/output/fields/amount"},
                    "region": {"$ref": "/steps/review/output/fields/region"},
                },
            ),
        ],
    )


def test_a_later_step_reads_the_decisions_field_values_by_ref(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _fields_workflow(engine)
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    row = _approval(engine, execution)
    assert [f["name"] for f in row.fields] == ["amount", "region"]
    with transaction(engine) as session:
        approvals.decide(
            session,
            tenant_id=tenant,
            approval_id=row.id,
            decision="approve",
            user_id="approver-1",
            fields={"amount": 250, "region": "日本"},
        )
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    by_name = steps(view)
    assert by_name["review"]["output"]["fields"] == {"amount": 250, "region": "日本"}
    assert by_name["apply"]["output"]["received"] == {"amount": 250, "region": "日本"}


def test_a_timeouts_default_decision_passes_the_fields_defaults_on(wf_env, engine, database_url, instance, sandbox):
    tenant, workflow = _fields_workflow(engine, on_timeout="approve")
    execution = start(engine, tenant, workflow)
    drive(instance, database_url)
    row = _approval(engine, execution)
    with transaction(engine) as session:
        approvals.expire_overdue(session, now=row.expires_at + dt.timedelta(seconds=1))
    drive(instance, database_url)
    view = state(engine, execution)
    assert view["status"] == "succeeded"
    assert steps(view)["apply"]["output"]["received"] == {"amount": None, "region": "eu"}
