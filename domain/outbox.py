"""The claim step every outbox shares (notifications, batch-job messages): claim, commit, call, record.

A claim counts the attempt (the intent, recorded before the outside world is called) and hides the row
for `claim_s`, so a concurrent deliverer skips it and a deliverer that dies mid-call leaves the row to
be tried again once the claim lapses (at least once).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

Row = TypeVar("Row")


def claim(session: Session, query: Select[tuple[Row]], *, now: datetime, claim_s: float) -> list[Row]:
    """Claim the rows `query` selects (due pending rows, in delivery order) in the caller's short
    transaction; returns detached copies to send once it commits. Rows must have `attempts` and
    `next_attempt_at`."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query).all())
    for row in rows:
        claimed: Any = row
        claimed.attempts += 1
        claimed.next_attempt_at = now + timedelta(seconds=claim_s)
    session.flush()
    for row in rows:
        session.expunge(row)
    return rows
