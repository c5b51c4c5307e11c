"""Approvals in the store (domain.approvals), on both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from domain import approvals
from domain.approval_links import verify
from domain.models import (
    AuditLog,
    HitlApproval,
    Notification,
    TenantMembership,
    TriggerQueue,
    User,
    WorkflowExecution,
)
from domain.settings import Settings
from domain.store import transaction
from tests.domain import factories

SETTINGS = Settings(environment="test")
HOUR = dt.timedelta(hours=1)


def member(session, tenant_id: str, roles: list[str], name: str) -> User:
    user = User(email=f"{name}-{tenant_id[:8]}@wrk.test", name=name)
    session.add(user)
    session.flush()
    session.add(TenantMembership(tenant_id=tenant_id, user_id=user.id, roles=roles))
    session.flush()
    return user


def execution(session, tenant_id: str) -> WorkflowExecution:
    """A workflow execution row to hang approvals on (the workflow engine makes the real ones)."""
    return factories.workflow_execution(session, tenant_id)


@pytest.fixture
def world(engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        alice = member(session, tenant.id, ["approver"], "alice")
        bob = member(session, tenant.id, ["approver", "ops_build"], "bob")
        carol = member(session, tenant.id, ["viewer"], "carol")
        run = execution(session, tenant.id)
        return {"tenant": tenant.id, "alice": alice.id, "bob": bob.id, "carol": carol.id, "execution": run.id}


def open_step(session, world, **overrides) -> HitlApproval:
    args = {
        "tenant_id": world["tenant"],
        "requested_by": "workflow_engine",
        "assignees": [world["carol"], "role:approver"],
        "message": "Ship it?\nDetails follow.",
        "timeout": HOUR,
        "on_timeout": "reject",
        "workflow_execution_id": world["execution"],
        "step_name": "review",
        "settings": SETTINGS,
    }
    args.update(overrides)
    return approvals.open_approval(session, **args)


def test_open_approval_records_the_row_its_audit_and_one_email_and_in_app_per_assignee(engine, world):
    with transaction(engine) as session:
        row = open_step(session, world)
        approval_id = row.id
        assert row.status == "pending" and row.outcome is None
        assert row.expires_at - row.created_at == HOUR
    with transaction(engine) as session:
        audit = session.scalars(select(AuditLog).where(AuditLog.entity_id == approval_id)).all()
        assert [a.action for a in audit] == ["approval_requested"]
        sent = session.scalars(select(Notification).where(Notification.template == "approval_requested")).all()
        # carol by id, alice and bob by their role: each gets an e-mail and an in-app notification.
        people = {world["alice"], world["bob"], world["carol"]}
        assert {n.recipient for n in sent if n.channel == "in_app"} == people
        emails = [n for n in sent if n.channel == "email"]
        assert len(emails) == 3
        for note in emails:
            assert note.payload["summary"] == "Ship it?"
            token = note.payload["approve_url"].split("token=")[1]
            claims = verify(SETTINGS, token)
            assert claims.approval_id == approval_id and claims.decision == "approve"
            assert claims.user_id in people


def test_open_approval_is_idempotent_per_execution_and_step(engine, world):
    with transaction(engine) as session:
        first = open_step(session, world).id
    with transaction(engine) as session:
        again = open_step(session, world, message="another message")
        assert again.id == first
        assert again.message.startswith("Ship it?")
    with transaction(engine) as session:
        assert len(session.scalars(select(HitlApproval)).all()) == 1
        assert len(session.scalars(select(AuditLog).where(AuditLog.action == "approval_requested")).all()) == 1


def test_cancel_for_execution_cancels_only_its_pending_approvals_audited(engine, world):
    with transaction(engine) as session:
        review = open_step(session, world).id
        other = open_step(session, world, step_name="sign_off").id
        standalone = open_step(session, world, workflow_execution_id=None, step_name=None).id
        decided = approvals.decide(
            session,
            tenant_id=world["tenant"],
            approval_id=other,
            decision="approve",
            user_id=world["alice"],
            roles=["approver"],
        )
        assert decided.won
    with transaction(engine) as session:
        count = approvals.cancel_for_execution(
            session, tenant_id=world["tenant"], workflow_execution_id=world["execution"], actor="ops-1"
        )
        assert count == 1
    with transaction(engine) as session:
        statuses = {r.id: r.status for r in session.scalars(select(HitlApproval))}
        assert statuses == {review: "cancelled", other: "approved", standalone: "pending"}
        cancelled = session.get(HitlApproval, review)
        assert cancelled.outcome is None
        audit = session.scalars(
            select(AuditLog).where(AuditLog.entity_id == review, AuditLog.action == "approval_cancelled")
        ).one()
        assert (audit.previous_status, audit.new_status, audit.actor_id) == ("pending", "cancelled", "ops-1")
        # A cancelled execution is not resumed: only the decided approval enqueued its continuation.
        triggers = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "approval")).all()
        assert [t.payload["hitl_approval_id"] for t in triggers] == [other]
    with transaction(engine) as session:
        assert (
            approvals.cancel_for_execution(
                session, tenant_id=world["tenant"], workflow_execution_id=world["execution"], actor="ops-1"
            )
            == 0
        )


def test_list_is_newest_first_paginated_and_filters_mine_by_id_or_role(engine, world):
    with transaction(engine) as session:
        to_carol = open_step(session, world, assignees=[world["carol"]], step_name="a").id
        to_role = open_step(session, world, assignees=["role:approver"], step_name="b").id
        to_nobody = open_step(session, world, assignees=["role:finance"], workflow_execution_id=None, step_name=None).id
    with transaction(engine) as session:
        page = approvals.list_approvals(session, world["tenant"], limit=2)
        assert [r.id for r in page.items] == [to_nobody, to_role] and page.next_offset == 2
        rest = approvals.list_approvals(session, world["tenant"], limit=2, offset=2)
        assert [r.id for r in rest.items] == [to_carol] and rest.next_offset is None
        mine = approvals.list_approvals(
            session, world["tenant"], assigned_to=approvals.assignee_keys(world["carol"], ["viewer"])
        )
        assert [r.id for r in mine.items] == [to_carol]
        mine = approvals.list_approvals(
            session, world["tenant"], assigned_to=approvals.assignee_keys(world["alice"], ["approver"])
        )
        assert [r.id for r in mine.items] == [to_role]
        of_run = approvals.list_approvals(session, world["tenant"], execution_id=world["execution"])
        assert {r.id for r in of_run.items} == {to_carol, to_role}
        assert approvals.list_approvals(session, "another-tenant").items == []
