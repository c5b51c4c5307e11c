"""The notification outbox: flows add rows in their own transaction; delivery sends them later.

A row is unique by `dedup_key`, so a flow that runs twice notifies once. Delivery is at least once: a
row is claimed (attempt counted, hidden for CLAIM_S) and committed, then sent with no transaction open,
then marked sent in a new transaction; a crash in between sends it again once the claim lapses (e-mails
carry the key as Message-ID so a receiver can drop the repeat). Failed sends back off; after
`max_attempts` a row is `dead`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.orm import Session

from domain.core import outbox
from domain.core.models import Notification, NotificationChannel, NotificationStatus, new_id


@dataclass(frozen=True)
class Template:
    subject: str
    body: str
    # Values for fields a payload may lack: rows queued before the field existed still render.
    defaults: Mapping[str, str] = field(default_factory=dict)


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
        "{action_title}: {project_name} v{version_number}",
        "{actor} {action_done} {project_name} v{version_number} ({automation_version_id}). Reason: {reason}",
        defaults={"action_title": "Deployed", "action_done": "deployed"},
    ),
    "automation_paused": Template(
        "{project_name} is paused",
        "Version {version_number} of {project_name} was paused by {actor}. Reason: {reason}",
    ),
    "ops_alert": Template("[{severity}] {summary}", "{summary}\n\n{details}"),
    # The deploy history's asset event (domain.deploy.history): its description in the Dagster UI.
    "live_version": Template(
        "{project_name}: {action} v{version_number}",
        "{action} v{version_number} by {actor}. Reason: {reason}",
    ),
    "approval_requested": Template(
        "Approval needed: {summary}",
        "{requested_by} asks for your decision:\n\n{message}\n\nApprove: {approve_url}\nReject: {reject_url}\n\n"
        "Each link works once and asks you to confirm. The request expires at {expires_at}; then "
        "'{on_timeout}' applies. Details: {approval_url}",
    ),
    # Seven-phase pipeline, phase 4: a match in the smart-prompt band asks the user to confirm.
    "claim_prompt": Template(
        "Confirm claim {claim_id}: {amount} {currency}",
        "We matched evidence to claim {claim_id} ({amount} {currency}, confidence {confidence}). Confirm to submit it.",
    ),
}


class UnknownTemplate(ValueError):
    pass


def render(template: str, payload: Mapping[str, Any]) -> tuple[str, str]:
    """Subject and body; a missing payload field raises KeyError naming it."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"unknown notification template {template!r}")
    t = TEMPLATES[template]
    values = {**t.defaults, **payload}
    return t.subject.format_map(values), t.body.format_map(values)


_COLUMNS = (
    "id",
    "tenant_id",
    "channel",
    "template",
    "recipient",
    "payload",
    "dedup_key",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "sent_at",
)
# One text for both backends, compiled once: SQLAlchemy never caches the dialects' ON CONFLICT inserts,
# and a deploy or a phase-4 trigger adds several notifications.
_TABLE = Notification.__table__.c
ADD = text(
    f"INSERT INTO notifications ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)}) "
    "ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
).bindparams(*(bindparam(c, type_=_TABLE[c].type) for c in ("payload", "next_attempt_at", "created_at", "sent_at")))


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
        "sent_at": None,
    }
    if channel is NotificationChannel.IN_APP:
        # In-app notifications are the rows themselves: stored is delivered.
        values["status"] = NotificationStatus.SENT.value
        values["sent_at"] = now
    return session.execute(ADD, values).scalar_one_or_none() is not None


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

# How long a claimed row is hidden from other deliverers. A deliverer that dies between claim and record
# leaves the row pending; it is due again when the claim lapses, and sent again (at least once).
CLAIM_S = 300.0

OUTBOX = outbox.Outbox(
    Notification,
    pending=NotificationStatus.PENDING.value,
    done=NotificationStatus.SENT.value,
    done_at="sent_at",
    dead=NotificationStatus.DEAD.value,
    claim_s=CLAIM_S,
)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    dead: int


def claim_due(session: Session, *, limit: int = 100, claim_s: float = CLAIM_S) -> list[Notification]:
    """Claim due pending rows in the caller's (short) transaction: count the attempt and push the row's
    next attempt past the claim, so a concurrent deliverer skips it. Returns detached copies to send."""
    return OUTBOX.claim_due(session, limit=limit, claim_s=claim_s)


def record_result(
    session: Session,
    claimed: Notification,
    error: Exception | None,
    *,
    max_attempts: int = 8,
    base_delay_s: float = 30.0,
    is_retryable: Callable[[Exception], bool] = lambda _e: True,
) -> NotificationStatus | None:
    """Record one send's outcome in the caller's transaction: sent, backed off, or dead. None when the row
    is no longer the pending row that was claimed (another deliverer finished it)."""
    status = OUTBOX.record_result(
        session, claimed, error, max_attempts=max_attempts, base_delay_s=base_delay_s, is_retryable=is_retryable
    )
    return None if status is None else NotificationStatus(status)


def deliver_due(
    engine: Engine,
    send: Sender,
    *,
    limit: int = 100,
    max_attempts: int = 8,
    base_delay_s: float = 30.0,
    is_retryable: Callable[[Exception], bool] = lambda _e: True,
) -> DeliveryReport:
    """Send due pending rows (claim and commit, send with no transaction open, record each result in
    its own transaction): no store lock is held while a mail server or Slack answers."""
    outcomes = OUTBOX.deliver_due(
        engine, send, limit=limit, max_attempts=max_attempts, base_delay_s=base_delay_s, is_retryable=is_retryable
    )
    return DeliveryReport(
        sent=outcomes[NotificationStatus.SENT.value],
        failed=outcomes[NotificationStatus.PENDING.value],
        dead=outcomes[NotificationStatus.DEAD.value],
    )
