from __future__ import annotations

import pytest
from sqlalchemy import select

from domain.core import models
from domain.core.models import NotificationChannel
from domain.core.notifications import UnknownTemplate, deliver_due, notify, ops_alert
from domain.core.settings import Settings
from domain.core.store import transaction
from resources.notifications import is_retryable, notifier, outbox_message_id
from resources.retry import RetryPolicy

PAYLOAD = {
    "project_name": "Invoices",
    "version_number": 3,
    "workflow_url": "http://wrk/wf_1",
    "automation_version_id": "v-1",
}


def _notifier(sandbox, slack: bool = False):
    settings = Settings(
        smtp_port=sandbox.smtp_port, slack_webhook_url=f"{sandbox.url}/slack/webhook/T000/B000" if slack else None
    )
    n = notifier(settings)
    n.mailer.retry = RetryPolicy(max_attempts=1)
    return n


def test_outbox_delivers_email_and_slack_once_per_dedup_key(engine, sandbox):
    with transaction(engine) as session:
        assert notify(
            session,
            channel=NotificationChannel.EMAIL,
            template="build_complete",
            recipient="client@acme.example",
            payload=PAYLOAD,
            dedup_key="build_complete:v-1",
        )
        assert not notify(
            session,
            channel=NotificationChannel.EMAIL,
            template="build_complete",
            recipient="client@acme.example",
            payload=PAYLOAD,
            dedup_key="build_complete:v-1",
        )
        notify(
            session,
            channel=NotificationChannel.SLACK,
            template="qa_ready",
            recipient="#ops",
            payload=PAYLOAD,
            dedup_key="qa_ready:v-1:slack",
        )
        notify(
            session,
            channel=NotificationChannel.IN_APP,
            template="qa_ready",
            recipient="user-1",
            payload=PAYLOAD,
            dedup_key="qa_ready:v-1:in_app",
        )
    report = deliver_due(engine, _notifier(sandbox, slack=True))
    assert (report.sent, report.failed, report.dead) == (2, 0, 0)
    [mail] = sandbox.mail()
    assert mail["to"] == ["client@acme.example"] and "Invoices v3 is built" in mail["subject"]
    assert mail["message_id"] == outbox_message_id("build_complete:v-1")
    [slack] = sandbox.slack()
    assert "QA ready: Invoices v3" in slack["text"]
    assert deliver_due(engine, _notifier(sandbox)).sent == 0  # nothing left to send
    with transaction(engine) as session:
        statuses = set(session.scalars(select(models.Notification.status)))
    assert statuses == {"sent"}


def test_failed_delivery_backs_off_then_goes_dead(engine, sandbox):
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.local", summary="s", details="d", dedup_key="alert-1")
    broken = Settings(smtp_port=1)  # nothing listens there
    send = notifier(broken)
    send.mailer.retry = RetryPolicy(max_attempts=1)
    report = deliver_due(engine, send, max_attempts=2, is_retryable=is_retryable)
    assert report.failed == 1
    with transaction(engine) as session:
        row = session.scalars(select(models.Notification)).one()
        row.next_attempt_at = row.created_at  # due again now
    report = deliver_due(engine, send, max_attempts=2, is_retryable=is_retryable)
    assert report.dead == 1
    with transaction(engine) as session:
        row = session.scalars(select(models.Notification)).one()
        assert row.status == "dead" and row.attempts == 2 and "RetryableError" in row.last_error


def test_unknown_template_or_missing_field_is_refused_at_enqueue(engine):
    with transaction(engine) as session:
        with pytest.raises(UnknownTemplate):
            notify(
                session, channel=NotificationChannel.EMAIL, template="nope", recipient="x", payload={}, dedup_key="k1"
            )
        with pytest.raises(KeyError, match="workflow_url"):
            notify(
                session,
                channel=NotificationChannel.EMAIL,
                template="build_complete",
                recipient="x",
                payload={"project_name": "p", "version_number": 1},
                dedup_key="k2",
            )


def test_a_template_field_added_later_has_a_default_for_rows_queued_before_it():
    from domain.core.notifications import render

    queued_before = {
        "project_name": "Order Sync",
        "version_number": 3,
        "automation_version_id": "v3",
        "actor": "rita",
        "reason": "-",
    }
    assert render("deployment_success", queued_before) == (
        "Deployed: Order Sync v3",
        "rita deployed Order Sync v3 (v3). Reason: -",
    )
    resumed = {**queued_before, "action_title": "Resumed", "action_done": "resumed"}
    assert render("deployment_success", resumed)[0] == "Resumed: Order Sync v3"
    with pytest.raises(KeyError, match="actor"):  # a field without a default is still required
        render("deployment_success", {k: v for k, v in queued_before.items() if k != "actor"})
