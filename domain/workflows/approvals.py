"""Human approvals (HITL): a request for a person's decision, from a workflow's approval step or a
standalone request from another service. Every SQL statement that moves an approval is in this module.

States and moves (the only ones; one table below, each move audited, never backwards):

    pending --decide(approve)--> approved
    pending --decide(reject)--> rejected
    pending --expire (timed out; on_timeout applied as the outcome)--> expired
    pending --cancel (its execution was cancelled)--> cancelled

Exactly one move out of `pending` wins: each is a conditional `UPDATE ... WHERE status = 'pending'`, so
a decision racing the timeout sweeper (or another decision) finds the row already moved and loses,
whatever the backend (PostgreSQL re-checks the WHERE after the winner's commit; SQLite serialises
writers with BEGIN IMMEDIATE). A human decision at or after `expires_at` never wins: it expires the
approval itself and is told so.

The winner's follow-ups are written in the same transaction: the audit row; for an approval of a
workflow execution, an `approval` trigger in the queue (the workflow engine resumes the execution);
for a standalone approval with a callback URL, the callback's outbox row (delivered later, at least
once, never inside a request).

Assignees are user ids, and roles written `role:<name>` (any member of the tenant holding that role).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Boolean, String, Table, bindparam, exists, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from domain.core import counters, lifecycle, notifications
from domain.core.lifecycle import Actor
from domain.core.models import (
    ApprovalStatus,
    AuditLog,
    CallbackStatus,
    HitlApproval,
    HitlApprovalCallback,
    NotificationChannel,
    TenantMembership,
    User,
)
from domain.core.settings import Settings, get_settings
from domain.core.store import is_postgres
from domain.queue import queue
from domain.workflows import decision_fields
from domain.workflows.approval_links import approval_links
from domain.workflows.decision_fields import DecisionField

A = ApprovalStatus
T: Table = HitlApproval.__table__  # type: ignore[assignment]

Decision = Literal["approve", "reject"]
Outcome = Literal["approve", "reject", "fail"]
OnReject = Literal["stop", "continue"]

# The one table of moves.
APPROVAL_TRANSITIONS: Mapping[ApprovalStatus, frozenset[ApprovalStatus]] = {
    A.PENDING: frozenset({A.APPROVED, A.REJECTED, A.EXPIRED, A.CANCELLED}),
    A.APPROVED: frozenset(),
    A.REJECTED: frozenset(),
    A.EXPIRED: frozenset(),
    A.CANCELLED: frozenset(),
}
DECISION_STATUS: Mapping[str, ApprovalStatus] = {"approve": A.APPROVED, "reject": A.REJECTED}

# Besides the assignees, these roles (in the approval's tenant) may decide any approval.
DECIDE_ANY_ROLES = frozenset({"ops_admin", "admin"})
ROLE_PREFIX = "role:"
ENTITY = "hitl_approvals"
SWEEPER = Actor.system("approval_sweeper")


class ApprovalError(Exception):
    pass


class ApprovalNotFound(ApprovalError):
    pass


class NotAnAssignee(ApprovalError):
    pass


def callback_host_allowed(host: str, allowed: list[str]) -> bool:
    """APPROVAL_CALLBACK_HOSTS: `host` exactly, or `.domain` for any host under it; none listed: any."""
    host = host.lower().rstrip(".")
    return not allowed or any(
        host.endswith(entry.lower()) if entry.startswith(".") else host == entry.lower() for entry in allowed
    )


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _now(session: Session) -> dt.datetime:
    # Read once the transaction has begun (on SQLite: once the write lock is held), as domain.queue.queue does.
    session.connection()
    return now_utc()


# -- opening -------------------------------------------------------------------------------------------


def open_approval(
    session: Session,
    *,
    tenant_id: str,
    requested_by: str,
    assignees: list[str],
    message: str,
    timeout: dt.timedelta,
    on_timeout: Outcome,
    on_reject: OnReject = "stop",
    workflow_execution_id: str | None = None,
    step_name: str | None = None,
    context: dict[str, Any] | None = None,
    callback_url: str | None = None,
    fields: Sequence[DecisionField] = (),
    settings: Settings | None = None,
) -> HitlApproval:
    """A pending approval in the caller's transaction (no network): the row, its audit row, and one
    e-mail (with signed links) and one in-app notification per assignee through the outbox. Idempotent
    per (workflow_execution_id, step_name): a second call returns the existing row. `fields`: the
    decision fields it asks for (checked by decision_fields.parse_fields)."""
    if not assignees:
        raise ValueError("an approval needs at least one assignee")
    if timeout <= dt.timedelta(0):
        raise ValueError("an approval's timeout must be positive")
    if step_name is not None and workflow_execution_id is None:
        raise ValueError("step_name needs workflow_execution_id")
    if workflow_execution_id is not None:
        existing = _of_step(session, tenant_id, workflow_execution_id, step_name)
        if existing is not None:
            return existing
    now = _now(session)
    row = HitlApproval(
        tenant_id=tenant_id,
        workflow_execution_id=workflow_execution_id,
        step_name=step_name,
        status=A.PENDING.value,
        requested_by=requested_by,
        assignees=list(dict.fromkeys(assignees)),
        message=message,
        context=dict(context or {}),
        expires_at=now + timeout,
        on_timeout=on_timeout,
        on_reject=on_reject,
        callback_url=callback_url,
        fields=[f.as_json() for f in fields],
        created_at=now,
    )
    if workflow_execution_id is not None:
        # Two runs of one step racing to open its approval: the unique (execution, step) lets one in;
        # the other finds it.
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            existing = _of_step(session, tenant_id, workflow_execution_id, step_name)
            if existing is None:
                raise
            return existing
    else:
        session.add(row)
        session.flush()
    lifecycle.record(
        session,
        tenant_id=tenant_id,
        entity_type=ENTITY,
        entity_id=row.id,
        action="approval_requested",
        actor=Actor.system(requested_by) if workflow_execution_id else Actor.user(requested_by),
        metadata={
            "assignees": row.assignees,
            "expires_at": row.expires_at.isoformat(),
            "on_timeout": on_timeout,
            "on_reject": on_reject,
            "workflow_execution_id": workflow_execution_id,
            "step_name": step_name,
        },
    )
    _notify_assignees(session, row, settings or get_settings())
    counters.count(session, "approvals", {"event": "requested"})
    return row


def _of_step(session: Session, tenant_id: str, execution_id: str, step_name: str | None) -> HitlApproval | None:
    query = select(HitlApproval).where(
        HitlApproval.tenant_id == tenant_id,
        HitlApproval.workflow_execution_id == execution_id,
        HitlApproval.step_name.is_(None) if step_name is None else HitlApproval.step_name == step_name,
    )
    return session.scalars(query).first()


@dataclass(frozen=True)
class Recipient:
    user_id: str
    email: str | None


def recipients(session: Session, approval: HitlApproval) -> list[Recipient]:
    """The people an approval is assigned to: its user ids, and the tenant's members holding its roles."""
    users = {a for a in approval.assignees if not a.startswith(ROLE_PREFIX)}
    roles = {a[len(ROLE_PREFIX) :] for a in approval.assignees if a.startswith(ROLE_PREFIX)}
    found: dict[str, str | None] = {u: None for u in sorted(users)}
    members = session.execute(
        select(User.id, User.email, TenantMembership.roles)
        .join(TenantMembership, TenantMembership.user_id == User.id)
        .where(TenantMembership.tenant_id == approval.tenant_id)
        .order_by(User.id)
    ).all()
    for user_id, email, member_roles in members:
        if user_id in users or roles & set(member_roles or []):
            found[user_id] = email
    return [Recipient(user_id, email) for user_id, email in found.items()]


def _notify_assignees(session: Session, approval: HitlApproval, settings: Settings) -> None:
    for person in recipients(session, approval):
        links = approval_links(settings, approval, person.user_id)
        payload = {
            "approval_id": approval.id,
            "message": approval.message,
            "summary": summary(approval.message),
            "requested_by": approval.requested_by,
            "expires_at": approval.expires_at.isoformat(),
            "on_timeout": approval.on_timeout,
            "workflow_execution_id": approval.workflow_execution_id or "",
            "step_name": approval.step_name or "",
            **links,
        }
        key = f"approval_requested:{approval.id}:{person.user_id}"
        notifications.notify_all(
            session,
            tenant_id=approval.tenant_id,
            payload=payload,
            messages=[
                (NotificationChannel.EMAIL, "approval_requested", person.email, f"{key}:email"),
                (NotificationChannel.IN_APP, "approval_requested", person.user_id, f"{key}:in_app"),
            ],
        )


def summary(message: str, width: int = 80) -> str:
    """The message's first line, short enough for an e-mail subject."""
    first = (message.strip().splitlines() or [""])[0]
    return first if len(first) <= width else first[: width - 1] + "…"


# -- reading -------------------------------------------------------------------------------------------


def get(session: Session, tenant_id: str, approval_id: str) -> HitlApproval | None:
    """An approval by id within one tenant (another tenant's approval is not found)."""
    return session.scalars(
        select(HitlApproval).where(HitlApproval.id == approval_id, HitlApproval.tenant_id == tenant_id)
    ).one_or_none()


def assignee_keys(user_id: str, roles: Iterable[str]) -> list[str]:
    """What an assignee list says to name this person: their id, or one of their roles."""
    return [user_id, *(ROLE_PREFIX + r for r in sorted(roles))]


def _assigned_to_any(session: Session, keys: Sequence[str]) -> ColumnElement[bool]:
    if is_postgres(session):
        # JSONB `?|`: the array holds one of these strings.
        wanted = bindparam("assignee_keys", list(keys), type_=ARRAY(String()))
        return T.c.assignees.op("?|", return_type=Boolean)(wanted)
    each = func.json_each(T.c.assignees).table_valued("value").alias("assignee")
    return exists(select(1).select_from(each).where(each.c.value.in_(list(keys))))


@dataclass(frozen=True)
class Page:
    items: list[HitlApproval]
    next_offset: int | None


def list_approvals(
    session: Session,
    tenant_id: str,
    *,
    status: str | None = None,
    execution_id: str | None = None,
    assigned_to: Sequence[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """A tenant's approvals, newest first; `assigned_to` (see assignee_keys) keeps those naming one of
    the keys."""
    query = select(HitlApproval).where(HitlApproval.tenant_id == tenant_id)
    if status:
        query = query.where(HitlApproval.status == status)
    if execution_id:
        query = query.where(HitlApproval.workflow_execution_id == execution_id)
    if assigned_to is not None:
        query = query.where(_assigned_to_any(session, assigned_to))
    rows = list(
        session.scalars(
            query.order_by(HitlApproval.created_at.desc(), HitlApproval.id.desc()).offset(offset).limit(limit + 1)
        ).all()
    )
    more = len(rows) > limit
    return Page(rows[:limit], offset + limit if more else None)


def roles_of(session: Session, tenant_id: str, user_id: str) -> frozenset[str]:
    """A member's roles in a tenant, from the store (for a signed link, which carries no token)."""
    roles = session.scalar(
        select(TenantMembership.roles).where(
            TenantMembership.tenant_id == tenant_id, TenantMembership.user_id == user_id
        )
    )
    return frozenset(roles or [])


def may_decide(approval: HitlApproval, user_id: str, roles: Iterable[str]) -> bool:
    """An assignee (by id or by one of their roles in the tenant), or ops_admin/admin there."""
    roles = frozenset(roles)
    return bool(roles & DECIDE_ANY_ROLES) or bool(set(assignee_keys(user_id, roles)) & set(approval.assignees))


def audit_trail(session: Session, approval: HitlApproval) -> list[Any]:

    return list(
        session.scalars(
            select(AuditLog)
            .where(
                AuditLog.tenant_id == approval.tenant_id,
                AuditLog.entity_type == ENTITY,
                AuditLog.entity_id == approval.id,
            )
            .order_by(AuditLog.id)
        ).all()
    )


# -- moving out of pending -------------------------------------------------------------------------------


def _move(
    session: Session,
    approval_id: str,
    to: ApprovalStatus,
    *,
    outcome: Outcome | None,
    actor: Actor,
    now: dt.datetime,
    comment: str | None = None,
    decided_by: str | None = None,
    also: ColumnElement[bool] | None = None,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
    field_values: dict[str, Any] | None = None,
) -> HitlApproval | None:
    """The one move: a conditional UPDATE from the statuses the table allows to reach `to` (and `also`).
    Returns the moved row with its follow-ups written, or None when another move won (nothing written)."""
    sources = [s.value for s, targets in APPROVAL_TRANSITIONS.items() if to in targets]
    conditions = [T.c.id == approval_id, T.c.status.in_(sources)]
    if also is not None:
        conditions.append(also)
    previous = session.execute(select(T.c.status).where(T.c.id == approval_id)).scalar_one_or_none()
    result = session.execute(
        update(T)
        .where(*conditions)
        .values(
            status=to.value,
            outcome=outcome,
            decided_by=decided_by,
            decided_at=now if to is not A.CANCELLED else None,
            decision_comment=comment,
            field_values=field_values,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get(HitlApproval, approval_id, populate_existing=True)
    assert row is not None
    if field_values:
        metadata = {**(metadata or {}), "fields": field_values}
    session.add(
        _audit(row, previous if previous in sources else A.PENDING.value, to, actor, now, comment, reason, metadata)
    )
    if to is not A.CANCELLED:
        _follow_ups(session, row)
    if to is A.EXPIRED:
        counters.count(session, "approvals", {"event": "expired"})
    elif to is not A.CANCELLED:
        counters.count(session, "approvals", {"event": "decided"})
        created = row.created_at.replace(tzinfo=row.created_at.tzinfo or dt.UTC)
        counters.observe(session, "approval_decision_seconds", (now - created).total_seconds())
    return row


def _audit(
    row: HitlApproval,
    previous: str,
    to: ApprovalStatus,
    actor: Actor,
    now: dt.datetime,
    comment: str | None,
    reason: str | None,
    metadata: dict[str, Any] | None,
) -> Any:

    return AuditLog(
        tenant_id=row.tenant_id,
        entity_type=ENTITY,
        entity_id=row.id,
        action={A.EXPIRED: "approval_expired", A.CANCELLED: "approval_cancelled"}.get(to, "approval_decided"),
        actor_type=actor.type,
        actor_id=actor.id,
        previous_status=previous,
        new_status=to.value,
        reason=reason or comment,
        details={"outcome": row.outcome, "comment": comment, **(metadata or {})},
        created_at=now,
    )


def _follow_ups(session: Session, row: HitlApproval) -> None:
    """What leaving pending sets going, in the same transaction: the execution's continuation, or the
    standalone request's callback."""
    if row.workflow_execution_id is not None:
        queue.enqueue(
            session,
            "approval",
            row.tenant_id,
            {
                "tenant_id": row.tenant_id,
                "hitl_approval_id": row.id,
                "workflow_execution_id": row.workflow_execution_id,
                "outcome": row.outcome,
            },
            dedup_key=f"approval:{row.id}",
        )
    if row.callback_url:
        session.add(
            HitlApprovalCallback(
                tenant_id=row.tenant_id,
                hitl_approval_id=row.id,
                url=row.callback_url,
                body=callback_body(row),
                status=CallbackStatus.PENDING.value,
                attempts=0,
                next_attempt_at=row.decided_at or now_utc(),
                created_at=now_utc(),
            )
        )


def callback_body(row: HitlApproval) -> dict[str, Any]:
    return {
        "type": "hitl.approval.decided",
        "approval_id": row.id,
        "tenant_id": row.tenant_id,
        "status": row.status,
        "outcome": row.outcome,
        "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "comment": row.decision_comment,
        "context": row.context,
        "fields": row.fields,
        "field_values": row.field_values,
    }


@dataclass(frozen=True)
class Decided:
    """The result of a decision: `won` is False when the approval had already left pending (or expired
    now, the decision coming too late); `approval` is the row as it stands."""

    approval: HitlApproval
    won: bool


def decide(
    session: Session,
    *,
    tenant_id: str,
    approval_id: str,
    decision: Decision,
    user_id: str,
    roles: Iterable[str] = (),
    comment: str | None = None,
    via: str = "api",
    metadata: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    fields: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Decided:
    """A person's decision, in the caller's transaction, with the values of the approval's decision
    fields (typed; see decision_fields). Raises ApprovalNotFound (not in this tenant), NotAnAssignee,
    FieldValuesInvalid (checked while the approval is pending). A decision that comes after the approval
    left pending does not win (`won` False); one at or after `expires_at` expires the approval
    (on_timeout applied) and does not win either."""
    if decision not in DECISION_STATUS:
        raise ValueError(f"unknown decision {decision!r}")
    row = get(session, tenant_id, approval_id)
    if row is None:
        raise ApprovalNotFound(approval_id)
    if not may_decide(row, user_id, roles):
        raise NotAnAssignee(approval_id)
    values = None
    if row.status == A.PENDING.value:
        values = decision_fields.validate_values(decision_fields.declared(row), fields, decision, settings)
    now = now or _now(session)
    moved = _move(
        session,
        approval_id,
        DECISION_STATUS[decision],
        outcome=decision,
        actor=Actor.user(user_id),
        now=now,
        comment=comment,
        decided_by=user_id,
        also=T.c.expires_at > now,
        metadata={"via": via, **(metadata or {})},
        field_values=values,
    )
    if moved is not None:
        return Decided(moved, True)
    row = session.get(HitlApproval, approval_id, populate_existing=True)
    assert row is not None
    if row.status == A.PENDING.value:  # still pending, so it failed only on expires_at: too late
        expired = _expire(session, row, now, metadata={"late_decision_by": user_id, "late_decision": decision})
        row = expired or session.get(HitlApproval, approval_id, populate_existing=True)
        assert row is not None
    return Decided(row, False)


def _expire(
    session: Session, row: HitlApproval, now: dt.datetime, metadata: dict[str, Any] | None = None
) -> HitlApproval | None:
    return _move(
        session,
        row.id,
        A.EXPIRED,
        outcome=row.on_timeout,  # type: ignore[arg-type]
        actor=SWEEPER,
        now=now,
        also=T.c.expires_at <= now,
        reason=f"timed out at {row.expires_at.isoformat()}; on_timeout {row.on_timeout} applied",
        metadata=metadata,
        field_values=decision_fields.default_values(decision_fields.declared(row)),
    )


def expire_overdue(session: Session, *, now: dt.datetime | None = None, limit: int = 200) -> list[HitlApproval]:
    """Pending approvals past `expires_at` -> expired, on_timeout applied as the outcome, in the caller's
    transaction. A row a decision moved first is left alone. Returns the rows this call expired."""
    now = now or _now(session)
    query = (
        select(HitlApproval)
        .where(HitlApproval.status == A.PENDING.value, HitlApproval.expires_at <= now)
        .order_by(HitlApproval.expires_at)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)  # a row being decided right now is the decision's
    expired = []
    for row in list(session.scalars(query).all()):
        moved = _expire(session, row, now)
        if moved is not None:
            expired.append(moved)
    return expired


def cancel_for_execution(session: Session, *, tenant_id: str, workflow_execution_id: str, actor: str) -> int:
    """The pending approvals of a cancelled execution -> cancelled (audited), in the caller's transaction.
    Returns how many moved. Nothing is enqueued: the execution is already ending."""
    now = _now(session)
    ids = session.scalars(
        select(HitlApproval.id).where(
            HitlApproval.tenant_id == tenant_id,
            HitlApproval.workflow_execution_id == workflow_execution_id,
            HitlApproval.status == A.PENDING.value,
        )
    ).all()
    moved = 0
    for approval_id in ids:
        row = _move(
            session,
            approval_id,
            A.CANCELLED,
            outcome=None,
            actor=Actor.user(actor),
            now=now,
            reason="workflow execution cancelled",
        )
        moved += row is not None
    return moved
