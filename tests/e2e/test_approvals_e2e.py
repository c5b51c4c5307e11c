"""Approvals through a real dagster-daemon: its sensor launches the approval sweep by itself, which
expires an overdue approval (on_timeout applied, the execution's continuation queued) and calls a
decided standalone approval's callback URL on the sandbox."""

import datetime as dt

from sqlalchemy import select, update

from domain.core.models import HitlApproval, TriggerQueue
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.workflows import approvals
from tests.domain import factories
from tests.domain.test_approvals import execution, member
from tests.servers import until


def test_the_daemon_sweeps_overdue_approvals_and_calls_callbacks(stack, engine):
    settings = Settings(environment="test")
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        alice = member(session, tenant.id, ["approver"], "alice")
        run = execution(session, tenant.id)
        overdue = approvals.open_approval(
            session,
            tenant_id=tenant.id,
            requested_by="workflow_engine",
            assignees=["role:approver"],
            message="Go on?",
            timeout=dt.timedelta(hours=1),
            on_timeout="fail",
            workflow_execution_id=run.id,
            step_name="gate",
            settings=settings,
        ).id
        standalone = approvals.open_approval(
            session,
            tenant_id=tenant.id,
            requested_by="billing-service",
            assignees=[alice.id],
            message="Refund?",
            timeout=dt.timedelta(hours=1),
            on_timeout="reject",
            callback_url=f"{stack['sandbox_url']}/callbacks/billing",
            settings=settings,
        ).id
        session.execute(
            update(HitlApproval)
            .where(HitlApproval.id == overdue)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    with transaction(engine) as session:
        assert approvals.decide(
            session, tenant_id=tenant.id, approval_id=standalone, decision="approve", user_id=alice.id
        ).won

    def callbacks():
        return stack["sandbox"].http.get("/_sandbox/callbacks").json()

    def expired():
        with transaction(engine) as session:
            return session.get(HitlApproval, overdue).status == "expired"

    log = lambda: stack["log"].read_text()[-3000:]  # noqa: E731
    until(expired, log)
    [received] = until(callbacks, log)
    assert received["body"]["approval_id"] == standalone and received["body"]["outcome"] == "approve"
    with transaction(engine) as session:
        row = session.get(HitlApproval, overdue)
        assert row.outcome == "fail"
        trigger = session.scalars(select(TriggerQueue).where(TriggerQueue.dedup_key == f"approval:{overdue}")).one()
        assert trigger.payload["outcome"] == "fail"
