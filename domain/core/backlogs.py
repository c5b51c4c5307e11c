"""What is waiting now, for /metrics' gauges: workflow executions per status, pending approvals (and
those about to expire), batch messages not published yet, notifications and approval callbacks pending
or dead, and the age of the oldest of each waiting kind. Read from the rows at each scrape (a gauge may
go down); call it in the scrape's one snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from domain.core.models import (
    ApprovalStatus,
    CallbackStatus,
    HitlApproval,
    HitlApprovalCallback,
    Notification,
    NotificationStatus,
    OutboundMessage,
    OutboundMessageStatus,
    WorkflowExecution,
)

# The outboxes as /metrics names them (channel): their status and creation columns, and their statuses
# pending and dead.
OUTBOX: dict[str, tuple[Any, Any, str, str]] = {
    "notification": (
        Notification.status,
        Notification.created_at,
        NotificationStatus.PENDING.value,
        NotificationStatus.DEAD.value,
    ),
    "callback": (
        HitlApprovalCallback.status,
        HitlApprovalCallback.created_at,
        CallbackStatus.PENDING.value,
        CallbackStatus.DEAD.value,
    ),
}


@dataclass(frozen=True)
class Backlogs:
    executions: dict[str, int]  # status -> rows
    approvals_pending: int
    approvals_expiring_soon: int
    batch_pending: dict[str, int]  # job -> pending messages
    batch_oldest_pending_age_s: dict[str, float]  # job -> seconds
    outbox: dict[tuple[str, str], int]  # (channel, pending | dead) -> rows
    outbox_oldest_pending_age_s: dict[str, float]  # channel -> seconds (0: none pending)


def _is(column: Any, value: str) -> Any:
    """`column = 'value'` with the value written into the SQL, so that the partial indexes over it (pending
    rows, dead rows) serve the count: a scrape reads the waiting rows, not every row ever sent."""
    return column == literal(value, literal_execute=True)


def _age(now: datetime, oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    return max((now - oldest.replace(tzinfo=oldest.tzinfo or UTC)).total_seconds(), 0.0)


def read(session: Session, expiry_warning_s: float, now: datetime | None = None) -> Backlogs:
    now = now or datetime.now(UTC)
    executions: dict[str, int] = {
        str(status): int(n)
        for status, n in session.execute(
            select(WorkflowExecution.status, func.count()).group_by(WorkflowExecution.status)
        ).all()
    }
    pending = _is(HitlApproval.status, ApprovalStatus.PENDING.value)
    approvals_pending = session.scalar(select(func.count()).where(pending)) or 0
    soon = now + timedelta(seconds=expiry_warning_s)
    expiring = session.scalar(select(func.count()).where(pending, HitlApproval.expires_at <= soon)) or 0
    batch: dict[str, int] = {}
    batch_age: dict[str, float] = {}
    for job, n, oldest in session.execute(
        select(OutboundMessage.job, func.count(), func.min(OutboundMessage.created_at))
        .where(_is(OutboundMessage.status, OutboundMessageStatus.PENDING.value))
        .group_by(OutboundMessage.job)
    ):
        batch[str(job)], batch_age[str(job)] = int(n), _age(now, oldest)
    outbox: dict[tuple[str, str], int] = {}
    outbox_age: dict[str, float] = {}
    for channel, (status, created_at, pending_value, dead_value) in OUTBOX.items():
        outbox[(channel, "pending")] = session.scalar(select(func.count()).where(_is(status, pending_value))) or 0
        outbox[(channel, "dead")] = session.scalar(select(func.count()).where(_is(status, dead_value))) or 0
        outbox_age[channel] = _age(now, session.scalar(select(func.min(created_at)).where(_is(status, pending_value))))
    return Backlogs(
        executions=executions,
        approvals_pending=int(approvals_pending),
        approvals_expiring_soon=int(expiring),
        batch_pending=batch,
        batch_oldest_pending_age_s=batch_age,
        outbox=outbox,
        outbox_oldest_pending_age_s=outbox_age,
    )
