"""Approvals in the store (domain.workflows.approvals), on both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from domain.core.models import (
    AuditLog,
    HitlApproval,
    HitlApprovalCallback,
    Notification,
    TenantMembership,
    TriggerQueue,
    User,
    WorkflowExecution,
)
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.workflows import approvals, decision_fields
from domain.workflows.approval_links import verify
from domain.workflows.decision_fields import FieldValuesInvalid
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


@pytest.mark.parametrize("on_timeout", ["approve", "reject", "fail"])
def test_an_overdue_approval_expires_applying_its_on_timeout(engine, world, on_timeout):
    with transaction(engine) as session:
        row = open_step(session, world, on_timeout=on_timeout)
        approval_id, expires_at = row.id, row.expires_at
        later = open_step(session, world, step_name="later", timeout=HOUR * 3).id
    with transaction(engine) as session:
        assert approvals.expire_overdue(session, now=expires_at - dt.timedelta(seconds=1)) == []
    with transaction(engine) as session:
        expired = approvals.expire_overdue(session, now=expires_at)
        assert [r.id for r in expired] == [approval_id]
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert (row.status, row.outcome, row.decided_by) == ("expired", on_timeout, None)
        assert session.get(HitlApproval, later).status == "pending"
        audit = session.scalars(
            select(AuditLog).where(AuditLog.entity_id == approval_id, AuditLog.action == "approval_expired")
        ).one()
        assert (audit.actor_type, audit.actor_id, audit.new_status) == ("system", "approval_sweeper", "expired")
        assert audit.details["outcome"] == on_timeout
        trigger = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "approval")).one()
        assert trigger.payload["outcome"] == on_timeout and trigger.dedup_key == f"approval:{approval_id}"
    with transaction(engine) as session:
        assert approvals.expire_overdue(session, now=expires_at + HOUR) == []  # never twice, never back


def test_moves_out_of_a_final_state_are_refused(engine, world):
    with transaction(engine) as session:
        row = open_step(session, world)
        approval_id = row.id
        assert approvals.decide(
            session, tenant_id=world["tenant"], approval_id=approval_id, decision="reject", user_id=world["carol"]
        ).won
    for decision in ("approve", "reject"):
        with transaction(engine) as session:
            again = approvals.decide(
                session, tenant_id=world["tenant"], approval_id=approval_id, decision=decision, user_id=world["carol"]
            )
            assert not again.won and again.approval.status == "rejected"
    with transaction(engine) as session:
        assert approvals.expire_overdue(session, now=dt.datetime.now(dt.UTC) + HOUR * 2) == []
        assert (
            approvals.cancel_for_execution(
                session, tenant_id=world["tenant"], workflow_execution_id=world["execution"], actor="ops-1"
            )
            == 0
        )
        moves = session.scalars(
            select(AuditLog).where(AuditLog.entity_id == approval_id, AuditLog.new_status.is_not(None))
        ).all()
        assert [(m.previous_status, m.new_status) for m in moves] == [("pending", "rejected")]


# -- a decision racing the expiry: real concurrent transactions, exactly one winner --------------------


def _lock_waiters(engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).scalar_one()


def _outcomes(engine, approval_id):
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        moves = session.scalars(
            select(AuditLog).where(AuditLog.entity_id == approval_id, AuditLog.new_status.is_not(None))
        ).all()
        triggers = session.scalars(
            select(TriggerQueue).where(TriggerQueue.dedup_key == f"approval:{approval_id}")
        ).all()
        return row, moves, triggers


@pytest.mark.parametrize("first", ["decision", "sweeper"])
def test_a_decision_racing_the_expiry_has_exactly_one_winner(engine, backend, world, first):
    """The first party moves the row inside an open transaction; the second runs in its own transaction
    meanwhile (on PostgreSQL we wait until it is blocked on the row's lock, when it gets there), then the
    first commits. Both parties are entitled in their own view: the decision is made before
    `expires_at`, the sweeper runs after it."""
    import threading

    with transaction(engine) as session:
        row = open_step(session, world, on_timeout="fail")
        approval_id, expires_at = row.id, row.expires_at
    results: dict[str, bool] = {}
    moved, release, errors = threading.Event(), threading.Event(), []

    def decision() -> bool:
        with transaction(engine) as session:
            outcome = approvals.decide(
                session,
                tenant_id=world["tenant"],
                approval_id=approval_id,
                decision="approve",
                user_id=world["alice"],
                roles=["approver"],
                now=expires_at - dt.timedelta(milliseconds=1),
            )
            if first == "decision":
                moved.set()
                release.wait()
            return outcome.won

    def sweeper() -> bool:
        with transaction(engine) as session:
            expired = approvals.expire_overdue(session, now=expires_at + dt.timedelta(milliseconds=1))
            if first == "sweeper":
                moved.set()
                release.wait()
            return [r.id for r in expired] == [approval_id]

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as exc:  # surfaced below
            errors.append(exc)
            moved.set()

    parties = {"decision": decision, "sweeper": sweeper}
    second = "sweeper" if first == "decision" else "decision"
    one = threading.Thread(target=run, args=(first, parties[first]))
    one.start()
    moved.wait()
    two = threading.Thread(target=run, args=(second, parties[second]))
    two.start()
    if backend == "postgresql" and first == "sweeper":
        # The decision's conditional UPDATE waits on the sweeper's row lock (no time bound: it gets there).
        while _lock_waiters(engine) == 0 and two.is_alive():
            threading.Event().wait(0.01)
    release.set()
    one.join()
    two.join()
    assert errors == []
    assert sorted(results.values()) == [False, True], results
    row, moves, triggers = _outcomes(engine, approval_id)
    winner = next(name for name, won in results.items() if won)
    assert winner == first  # the one that moved the row first
    expected = ("approved", "approve") if winner == "decision" else ("expired", "fail")
    assert (row.status, row.outcome) == expected
    assert [(m.previous_status, m.new_status) for m in moves] == [("pending", row.status)]
    assert [t.payload["outcome"] for t in triggers] == [row.outcome]


def _race_round(engine, world, step_name: str) -> tuple[str, list[str]]:
    """Two decisions and the sweeper released together by one barrier; returns the approval and who won."""
    import threading

    with transaction(engine) as session:
        row = open_step(session, world, step_name=step_name)
        approval_id, expires_at = row.id, row.expires_at
    barrier = threading.Barrier(3)
    wins: list[str] = []
    errors: list[Exception] = []

    def decide(decision: str) -> None:
        try:
            barrier.wait()
            with transaction(engine) as session:
                if approvals.decide(
                    session,
                    tenant_id=world["tenant"],
                    approval_id=approval_id,
                    decision=decision,
                    user_id=world["bob"],
                    roles=["approver"],
                    now=expires_at - dt.timedelta(milliseconds=1),
                ).won:
                    wins.append(decision)
        except Exception as exc:
            errors.append(exc)

    def sweep() -> None:
        try:
            barrier.wait()
            with transaction(engine) as session:
                if approvals.expire_overdue(session, now=expires_at + dt.timedelta(milliseconds=1)):
                    wins.append("expired")
        except Exception as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=decide, args=("approve",)),
        threading.Thread(target=decide, args=("reject",)),
        threading.Thread(target=sweep),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return approval_id, wins


def test_decisions_and_sweeps_started_together_always_leave_one_outcome(engine, world):
    for round_ in range(8):
        approval_id, wins = _race_round(engine, world, f"race-{round_}")
        assert len(wins) == 1, wins
        row, moves, triggers = _outcomes(engine, approval_id)
        assert row.status == {"approve": "approved", "reject": "rejected", "expired": "expired"}[wins[0]]
        assert len(moves) == 1 and len(triggers) == 1


def test_two_runs_opening_one_steps_approval_at_once_get_the_same_row(engine, backend, world):
    """A re-executed run racing the first one: the second insert waits on the first (PostgreSQL: on the
    unique index; SQLite: on the write lock), then finds its row."""
    import threading

    opened, release, ids, errors = threading.Event(), threading.Event(), [], []

    def first() -> None:
        with transaction(engine) as session:
            ids.append(open_step(session, world).id)
            opened.set()
            release.wait()

    def second() -> None:
        try:
            with transaction(engine) as session:
                ids.append(open_step(session, world).id)
        except Exception as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    opened.wait()
    two = threading.Thread(target=second)
    two.start()
    if backend == "postgresql":
        while _lock_waiters(engine) == 0 and two.is_alive():
            threading.Event().wait(0.01)
    release.set()
    one.join()
    two.join()
    assert errors == [] and len(ids) == 2 and ids[0] == ids[1]
    with transaction(engine) as session:
        assert len(session.scalars(select(HitlApproval)).all()) == 1
        assert len(session.scalars(select(AuditLog).where(AuditLog.action == "approval_requested")).all()) == 1


FIELDS = [
    {"name": "amount", "type": "number", "required": True},
    {"name": "region", "type": "choice", "options": ["eu", "日本"], "default": "eu"},
    {"name": "note", "type": "string"},
]


def test_an_approvals_declared_fields_and_its_decisions_values_are_stored_and_audited(engine, world):
    with transaction(engine) as session:
        row = open_step(session, world, fields=decision_fields.parse_fields(FIELDS, settings=SETTINGS))
        approval_id = row.id
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert [f["name"] for f in row.fields] == ["amount", "region", "note"] and row.field_values is None
        assert decision_fields.declared(row)[1].options == ("eu", "日本")
        decided = approvals.decide(
            session,
            tenant_id=world["tenant"],
            approval_id=approval_id,
            decision="approve",
            user_id=world["alice"],
            roles=["approver"],
            fields={"amount": 1200, "note": "Überweisung ✓"},
            settings=SETTINGS,
        )
        assert decided.won
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert row.field_values == {"amount": 1200, "region": "eu", "note": "Überweisung ✓"}
        audit = approvals.audit_trail(session, row)
        assert audit[-1].details["fields"] == row.field_values


def test_values_that_break_a_field_are_refused_and_nothing_moves(engine, world):
    with transaction(engine) as session:
        approval_id = open_step(session, world, fields=decision_fields.parse_fields(FIELDS, settings=SETTINGS)).id
    for decision, values, bad in [
        ("approve", {}, ["fields.amount"]),
        ("approve", {"amount": 1, "region": "mars"}, ["fields.region"]),
        ("reject", {"undeclared": True}, ["fields.undeclared"]),
    ]:
        with pytest.raises(FieldValuesInvalid) as caught, transaction(engine) as session:
            approvals.decide(
                session,
                tenant_id=world["tenant"],
                approval_id=approval_id,
                decision=decision,
                user_id=world["alice"],
                roles=["approver"],
                fields=values,
                settings=SETTINGS,
            )
        assert [e["field"] for e in caught.value.errors] == bad
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert (row.status, row.field_values) == ("pending", None)
        # a rejection needs no required field
        approvals.decide(
            session,
            tenant_id=world["tenant"],
            approval_id=approval_id,
            decision="reject",
            user_id=world["alice"],
            roles=["approver"],
            settings=SETTINGS,
        )
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert (row.status, row.field_values) == ("rejected", {"amount": None, "region": "eu", "note": None})


def test_a_timeout_records_the_fields_defaults_and_the_callback_carries_fields_and_values(engine, world):
    with transaction(engine) as session:
        row = approvals.open_approval(
            session,
            tenant_id=world["tenant"],
            requested_by="billing",
            assignees=["role:approver"],
            message="Refund?",
            timeout=HOUR,
            on_timeout="approve",
            callback_url="http://127.0.0.1:9/callback",
            fields=decision_fields.parse_fields(FIELDS, settings=SETTINGS),
            settings=SETTINGS,
        )
        approval_id, expires_at = row.id, row.expires_at
    with transaction(engine) as session:
        assert [r.id for r in approvals.expire_overdue(session, now=expires_at + dt.timedelta(seconds=1))] == [
            approval_id
        ]
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert (row.status, row.outcome) == ("expired", "approve")
        assert row.field_values == {"amount": None, "region": "eu", "note": None}
        callback = session.scalars(
            select(HitlApprovalCallback).where(HitlApprovalCallback.hitl_approval_id == approval_id)
        ).one()
        assert callback.body["fields"] == row.fields and callback.body["field_values"] == row.field_values
