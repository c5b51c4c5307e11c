"""The notification outbox: flows add rows in their own transaction; delivery sends them later.

A row is unique by `dedup_key`, so a flow that runs twice notifies once. Delivery is at least once: a
row is marked sent after its send succeeded, and a crash in between sends it again (e-mails carry the
key as Message-ID so a receiver can drop the repeat). Failed sends back off; after `max_attempts` a
row is `dead`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain import backoff
from domain.models import Notification, NotificationChannel, NotificationStatus, new_id


@dataclass(frozen=True)
class Template:
    subject: str
    body: str


TEMPLATES: Mapping[str, Template] = {
    "build_complete": Template(
        "Your automation {project_name} v{version_number} is built",
        "The build of {project_name} v{version_number} finished. Workflow: {workflow_url}",
    ),
    "qa_ready": Template(
        "QA ready: {project_name} v{version_number}",
        "{project_name} v{version_number} ({automation_version_id}) is in QA & Testing. Workflow: {workflow_url}",
    ),
    "automation_live": Template(
        "{project_name} is live",
        "Version {version_number} of {project_name} is now live in production.",
    ),
    "deployment_success": Template(
        "Deployed: {project_name} v{version_number}",
        "{actor} deployed {project_name} v{version_number} ({automation_version_id}). Reason: {reason}",
    ),
    "automation_paused": Template(
        "{project_name} is paused",
        "Version {version_number} of {project_name} was paused by {actor}. Reason: {reason}",
    ),
    "ops_alert": Template("[{severity}] {summary}", "{summary}\n\n{details}"),
}


class UnknownTemplate(ValueError):
    pass


def render(template: str, payload: Mapping[str, Any]) -> tuple[str, str]:
    """Subject and body; a missing payload field raises KeyError naming it."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"unknown notification template {template!r}")
    t = TEMPLATES[template]
    return t.subject.format_map(payload), t.body.format_map(payload)


def notify(
    session: Session,
    *,
    channel: NotificationChannel,
    template: str,
    recipient: str,
    payload: Mapping[str, Any],
    dedup_key: str,
    tenant_id: str | None = None,
) -> bool:
    """Add a notification to the outbox in the caller's transaction. False if the key was already there."""
    render(template, payload)  # refuse an unknown template or a payload it cannot fill, now
    now = datetime.now(UTC)
    values = {
        "id": new_id(),
        "tenant_id": tenant_id,
        "channel": channel.value,
        "template": template,
        "recipient": recipient,
        "payload": dict(payload),
        "dedup_key": dedup_key,
        "status": NotificationStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    if channel is NotificationChannel.IN_APP:
        # In-app notifications are the rows themselves: stored is delivered.
        values["status"] = NotificationStatus.SENT.value
        values["sent_at"] = now
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Notification)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(Notification.id)
    )
    return session.execute(statement).scalar_one_or_none() is not None


Message = tuple[NotificationChannel, str, "str | None", str]  # channel, template, recipient, dedup key


def notify_all(session: Session, *, tenant_id: str | None, payload: Mapping[str, Any], messages: list[Message]) -> int:
    """One payload to several recipients; a message without a recipient is skipped. Returns how many
    were new in the outbox."""
    return sum(
        notify(
            session,
            channel=channel,
            template=template,
            recipient=recipient,
            payload=payload,
            dedup_key=dedup_key,
            tenant_id=tenant_id,
        )
        for channel, template, recipient, dedup_key in messages
        if recipient
    )


def ops_alert(
    session: Session,
    ops_email: str,
    *,
    summary: str,
    details: str,
    dedup_key: str,
    severity: str = "high",
    tenant_id: str | None = None,
) -> bool:
    return notify(
        session,
        channel=NotificationChannel.EMAIL,
        template="ops_alert",
        recipient=ops_email,
        payload={"summary": summary, "details": details, "severity": severity},
        dedup_key=dedup_key,
        tenant_id=tenant_id,
    )


Sender = Callable[[Notification], None]


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    dead: int


def deliver_due(
    session: Session,
    send: Sender,
    *,
    limit: int = 100,
    max_attempts: int = 8,
    base_delay_s: float = 30.0,
    is_retryable: Callable[[Exception], bool] = lambda _e: True,
) -> DeliveryReport:
    """Send due pending rows (locked, so two deliverers never send the same row at once)."""
    now = datetime.now(UTC)
    query = (
        select(Notification)
        .where(Notification.status == NotificationStatus.PENDING.value, Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    sent = failed = dead = 0
    for row in session.scalars(query).all():
        row.attempts += 1
        try:
            send(row)
        except Exception as exc:
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            if row.attempts >= max_attempts or not is_retryable(exc):
                row.status = NotificationStatus.DEAD.value
                dead += 1
            else:
                delay = backoff.backoff_seconds(row.attempts, base_delay_s, 3600.0)
                row.next_attempt_at = now + timedelta(seconds=delay)
                failed += 1
        else:
            row.status = NotificationStatus.SENT.value
            row.sent_at = datetime.now(UTC)
            sent += 1
    return DeliveryReport(sent=sent, failed=failed, dead=dead)
