"""The one outbox delivery loop (domain/core/outbox.py `Outbox`), through the notifications' outbox, and the
one dialect test, on both backends."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from domain.core import notifications
from domain.core.models import CallbackStatus, HitlApprovalCallback, Notification, NotificationStatus
from domain.core.notifications import ops_alert
from domain.core.store import is_postgres, read_transaction, transaction
from domain.queue.queue import now_utc
from domain.workflows import approval_callbacks


def test_the_dialect_is_one_answer_for_an_engine_its_connections_and_its_sessions(engine, backend):
    with transaction(engine) as session:
        assert is_postgres(engine) is is_postgres(session) is is_postgres(session.connection())
    assert is_postgres(engine) is (backend == "postgresql")


def test_each_outbox_declares_its_rules_over_the_one_loop():
    assert (notifications.OUTBOX.model, notifications.OUTBOX.done_at) == (Notification, "sent_at")
    assert notifications.OUTBOX.done == NotificationStatus.SENT.value
    assert (approval_callbacks.OUTBOX.model, approval_callbacks.OUTBOX.done_at) == (
        HitlApprovalCallback,
        "delivered_at",
    )
    assert approval_callbacks.OUTBOX.done == CallbackStatus.DELIVERED.value


def test_a_due_row_is_counted_claimed_once_then_delivered_and_a_later_one_waits(engine):
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="now", details="d", dedup_key="now-1")
        ops_alert(session, "ops@wrk.test", summary="later", details="d", dedup_key="later-1")
        session.execute(
            update(Notification)
            .where(Notification.dedup_key == "later-1")
            .values(next_attempt_at=now_utc() + timedelta(hours=1))
        )
    outbox = notifications.OUTBOX
    with read_transaction(engine) as session:
        assert outbox.due_count(session) == 1
    sent: list[str] = []
    outcomes = outbox.deliver_due(engine, lambda row: sent.append(row.dedup_key))
    assert sent == ["now-1"] and outcomes == {NotificationStatus.SENT.value: 1}
    with read_transaction(engine) as session:
        assert outbox.due_count(session) == 0
        statuses = dict(session.execute(select(Notification.dedup_key, Notification.status)).all())
    assert statuses == {"now-1": "sent", "later-1": "pending"}


def test_a_failed_call_backs_off_and_the_last_attempt_is_dead(engine):
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="down", details="d", dedup_key="down-1")

    def refuse(_row: Notification) -> None:
        raise ConnectionError("mail server down")

    outbox = notifications.OUTBOX
    assert outbox.deliver_due(engine, refuse, max_attempts=2) == {NotificationStatus.PENDING.value: 1}
    with transaction(engine) as session:  # due again at once
        session.execute(update(Notification).values(next_attempt_at=now_utc()))
    assert outbox.deliver_due(engine, refuse, max_attempts=2) == {NotificationStatus.DEAD.value: 1}
    with read_transaction(engine) as session:
        row = session.scalars(select(Notification)).one()
    assert (row.status, row.attempts) == ("dead", 2) and "mail server down" in (row.last_error or "")
