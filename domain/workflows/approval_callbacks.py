"""Standalone approvals' callbacks: the outbox row is written with the decision (domain.workflows.approvals); a
delivery run claims due rows and commits, calls each URL with no transaction open, then records each
result in its own transaction (the notifications outbox's shape, domain.core.outbox's claim). A crash
between the decision and the call loses nothing: the row is there, due. A crash after the call and
before the record calls again once the claim lapses (at least once; the receiver dedupes on the
`Idempotency-Key`, the approval's id).

States: pending -> delivered | dead, never back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain.core import outbox
from domain.core.models import CallbackStatus, HitlApprovalCallback

# How long a claimed callback is hidden from other deliverers (the retry policy's attempts fit in it).
CLAIM_S = 300.0
MAX_ATTEMPTS = 8
BASE_DELAY_S = 30.0

OUTBOX = outbox.Outbox(
    HitlApprovalCallback,
    pending=CallbackStatus.PENDING.value,
    done=CallbackStatus.DELIVERED.value,
    done_at="delivered_at",
    dead=CallbackStatus.DEAD.value,
    max_attempts=MAX_ATTEMPTS,
    base_delay_s=BASE_DELAY_S,
    claim_s=CLAIM_S,
)

Poster = Callable[[HitlApprovalCallback], None]


@dataclass(frozen=True)
class CallbackReport:
    delivered: int
    failed: int
    dead: int


def due_count(session: Session, now: dt.datetime | None = None) -> int:
    return OUTBOX.due_count(session, now)


def claim_due(session: Session, *, limit: int = 100, claim_s: float = CLAIM_S) -> list[HitlApprovalCallback]:
    return OUTBOX.claim_due(session, limit=limit, claim_s=claim_s)


def record_result(
    session: Session,
    claimed: HitlApprovalCallback,
    error: Exception | None,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    base_delay_s: float = BASE_DELAY_S,
    is_retryable: Callable[[Exception], bool] = lambda _e: True,
) -> CallbackStatus | None:
    """Delivered, backed off, or dead; None when the row is no longer the claim we made."""
    status = OUTBOX.record_result(
        session, claimed, error, max_attempts=max_attempts, base_delay_s=base_delay_s, is_retryable=is_retryable
    )
    return None if status is None else CallbackStatus(status)


def deliver_due(
    engine: Engine,
    post: Poster,
    *,
    limit: int = 100,
    max_attempts: int = MAX_ATTEMPTS,
    base_delay_s: float = BASE_DELAY_S,
    is_retryable: Callable[[Exception], bool] = lambda _e: True,
) -> CallbackReport:
    outcomes = OUTBOX.deliver_due(
        engine, post, limit=limit, max_attempts=max_attempts, base_delay_s=base_delay_s, is_retryable=is_retryable
    )
    return CallbackReport(
        delivered=outcomes[CallbackStatus.DELIVERED.value],
        failed=outcomes[CallbackStatus.PENDING.value],
        dead=outcomes[CallbackStatus.DEAD.value],
    )
