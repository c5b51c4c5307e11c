"""Reading the trigger queue: one row as a run's reaction reads it, the live trigger holding a dedup key,
the rows of a kind in a state, whether a kind has a trigger due, and the figures per kind and state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from domain.core.models import QueueState
from domain.queue.statements import LIVE, Q, S, json_value, now_in
from domain.queue.triggers import KINDS


@dataclass(frozen=True)
class Trigger:
    """A queue row as a run's reaction reads it."""

    id: int
    kind: str
    tenant_id: str | None
    payload: dict[str, Any]
    state: QueueState
    claim_token: str | None


def find(session: Session, row_id: int) -> Trigger | None:
    row = session.execute(
        select(Q.c.id, Q.c.kind, Q.c.tenant_id, Q.c.payload, Q.c.state, Q.c.claim_token).where(Q.c.id == row_id)
    ).one_or_none()
    if row is None:
        return None
    return Trigger(row.id, row.kind, row.tenant_id, json_value(row.payload), S(row.state), row.claim_token)


def held_by_kind(session: Session, kind: str, state: QueueState, limit: int = 500) -> list[Any]:
    return list(
        session.execute(
            select(Q.c.id, Q.c.attempts, Q.c.claim_token, Q.c.lease_expires_at, Q.c.run_id)
            .where(Q.c.kind == kind, Q.c.state == state.value)
            .order_by(Q.c.id)
            .limit(limit)
        ).all()
    )


def due(session: Session, kind: str) -> bool:
    """Whether a trigger of `kind` is available and due now (what a worker would claim)."""
    found = session.scalars(
        select(Q.c.id)
        .where(Q.c.state == S.AVAILABLE.value, Q.c.kind == kind, Q.c.available_at <= now_in(session))
        .limit(1)
    ).first()
    return found is not None


QUEUED_SINCE_SCAN = 1000  # how far back from the newest row queued_since looks


def queued_since(session: Session, kind: str, since: datetime) -> bool:
    """Whether a trigger of `kind` was queued at or after `since`, among the queue's newest
    QUEUED_SINCE_SCAN rows (the primary key's end: a bounded read however large the table, however long
    ago the kind was last queued; a kind swamped by that many newer rows of others reads as not queued)."""
    newest = select(Q.c.kind, Q.c.created_at).order_by(Q.c.id.desc()).limit(QUEUED_SINCE_SCAN).subquery()
    found = session.scalars(
        select(newest.c.created_at).where(newest.c.kind == kind, newest.c.created_at >= since).limit(1)
    ).first()
    return found is not None


def live_id(session: Session, kind: str, dedup_key: str) -> int | None:
    """The id of the live trigger holding `dedup_key` for `kind`, if any (what a redelivery is told)."""
    return session.scalars(
        select(Q.c.id).where(Q.c.kind == kind, Q.c.dedup_key == dedup_key, Q.c.state.in_(LIVE))
    ).first()


def stats(session: Session, tenant_ids: Iterable[str] | None = None, tenantless: bool = True) -> dict[str, Any]:
    """Rows per kind and state, with the age of the oldest available row and of the oldest launched row
    (since its launch) per kind: a launched row that grows old is a run nobody reconciled. With
    `tenant_ids`, only those tenants' rows, plus the rows of no tenant when `tenantless`."""
    now = now_in(session)
    scope = []
    if tenant_ids is not None:
        owned = Q.c.tenant_id.in_(list(tenant_ids))
        scope.append(or_(owned, Q.c.tenant_id.is_(None)) if tenantless else owned)
    counts = session.execute(
        select(Q.c.kind, Q.c.state, func.count()).where(*scope).group_by(Q.c.kind, Q.c.state)
    ).all()
    oldest = session.execute(
        select(Q.c.kind, func.min(Q.c.available_at)).where(Q.c.state == S.AVAILABLE.value, *scope).group_by(Q.c.kind)
    ).all()
    # A launched row's updated_at is its launch time: nothing else writes a launched row.
    oldest_launched = session.execute(
        select(Q.c.kind, func.min(Q.c.updated_at)).where(Q.c.state == S.LAUNCHED.value, *scope).group_by(Q.c.kind)
    ).all()
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({*KINDS, *(row[0] for row in counts)}):
        kinds[kind] = {
            "states": {s.value: 0 for s in QueueState},
            "oldest_available_age_s": None,
            "oldest_launched_age_s": None,
        }
    for kind, state, count in counts:
        kinds[kind]["states"][state] = int(count)
    for field, rows in (("oldest_available_age_s", oldest), ("oldest_launched_age_s", oldest_launched)):
        for kind, since in rows:
            if since is not None:
                if since.tzinfo is None:
                    since = since.replace(tzinfo=UTC)
                kinds[kind][field] = round(max((now - since).total_seconds(), 0.0), 3)
    return {"kinds": kinds, "at": now.isoformat()}
