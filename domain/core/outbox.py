"""What every outbox shares (notifications, approval callbacks, batch-job messages): claim, commit, call,
record.

A claim counts the attempt (the intent, recorded before the outside world is called) and hides the row
for `claim_s`, so a concurrent deliverer skips it and a deliverer that dies mid-call leaves the row to
be tried again once the claim lapses (at least once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, Select, func, select
from sqlalchemy.orm import Session

from domain.core import backoff
from domain.core.store import is_postgres, transaction

Row = TypeVar("Row")
Outcome = TypeVar("Outcome")


def claim(session: Session, query: Select[tuple[Row]], *, now: datetime, claim_s: float) -> list[Row]:
    """Claim the rows `query` selects (due pending rows, in delivery order) in the caller's short
    transaction; returns detached copies to send once it commits. Rows must have `attempts` and
    `next_attempt_at`."""
    if is_postgres(session):
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


def record(
    session: Session,
    claimed: Any,
    error: Exception | None,
    *,
    pending: str,
    done: str,
    done_at: str,
    dead: str,
    max_attempts: int,
    base_delay_s: float,
    is_retryable: Callable[[Exception], bool],
) -> str | None:
    """Record one call's outcome in the caller's transaction: `done` (stamping the `done_at` column),
    backed off (`pending`), or `dead` after `max_attempts` or a permanent error. Returns the new status;
    None when the row is no longer the pending row that was claimed (another deliverer finished it)."""
    row: Any = session.get(type(claimed), claimed.id, with_for_update=is_postgres(session))
    if row is None or row.status != pending or row.attempts != claimed.attempts:
        return None
    now = datetime.now(UTC)
    if error is None:
        row.status = done
        setattr(row, done_at, now)
        row.last_error = None
        return done
    row.last_error = f"{type(error).__name__}: {error}"[:2000]
    if row.attempts >= max_attempts or not is_retryable(error):
        row.status = dead
        return dead
    row.next_attempt_at = now + timedelta(seconds=backoff.backoff_seconds(row.attempts, base_delay_s, 3600.0))
    return pending


def deliver(
    engine: Engine,
    claim_due: Callable[[Session], list[Row]],
    call: Callable[[Row], None],
    record_result: Callable[[Session, Row, Exception | None], Outcome],
) -> Counter[Outcome]:
    """Claim due rows and commit, call each with no transaction open, then record each result in a
    transaction of its own: no store lock is held while the outside world answers. Counts the outcomes."""
    with transaction(engine) as session:
        claimed = claim_due(session)
    outcomes: Counter[Outcome] = Counter()
    for row in claimed:
        error: Exception | None = None
        try:
            call(row)
        except Exception as exc:
            error = exc
        with transaction(engine) as session:
            outcomes[record_result(session, row, error)] += 1
    return outcomes


@dataclass(frozen=True)
class Outbox(Generic[Row]):
    """One outbox's rules: its rows' model (with `status`, `attempts`, `next_attempt_at`, `last_error`),
    the statuses they move through (pending -> done | dead, never back), the column stamped when done,
    and how often and how patiently a row is tried. The delivery loop is the same for every outbox."""

    model: type[Row]
    pending: str
    done: str
    done_at: str
    dead: str
    max_attempts: int = 8
    base_delay_s: float = 30.0
    claim_s: float = 300.0  # how long a claimed row is hidden from other deliverers

    def _due(self, now: datetime) -> Any:
        model: Any = self.model
        return (model.status == self.pending) & (model.next_attempt_at <= now)

    def due_count(self, session: Session, now: datetime | None = None) -> int:
        count = session.scalar(select(func.count()).select_from(self.model).where(self._due(now or datetime.now(UTC))))
        return int(count or 0)

    def claim_due(self, session: Session, *, limit: int = 100, claim_s: float | None = None) -> list[Row]:
        """Claim due pending rows, oldest due first, in the caller's short transaction (see `claim`)."""
        now = datetime.now(UTC)
        model: Any = self.model
        query = select(self.model).where(self._due(now)).order_by(model.next_attempt_at).limit(limit)
        return claim(session, query, now=now, claim_s=self.claim_s if claim_s is None else claim_s)

    def record_result(
        self,
        session: Session,
        claimed: Row,
        error: Exception | None,
        *,
        max_attempts: int | None = None,
        base_delay_s: float | None = None,
        is_retryable: Callable[[Exception], bool] = lambda _e: True,
    ) -> str | None:
        """Done, backed off, or dead (see `record`); None when the row is no longer the claim we made."""
        return record(
            session,
            claimed,
            error,
            pending=self.pending,
            done=self.done,
            done_at=self.done_at,
            dead=self.dead,
            max_attempts=self.max_attempts if max_attempts is None else max_attempts,
            base_delay_s=self.base_delay_s if base_delay_s is None else base_delay_s,
            is_retryable=is_retryable,
        )

    def deliver_due(
        self,
        engine: Engine,
        call: Callable[[Row], None],
        *,
        limit: int = 100,
        max_attempts: int | None = None,
        base_delay_s: float | None = None,
        is_retryable: Callable[[Exception], bool] = lambda _e: True,
    ) -> Counter[str | None]:
        """Call each due row (see `deliver`); counts the new statuses (None: finished by another deliverer)."""
        return deliver(
            engine,
            lambda session: self.claim_due(session, limit=limit),
            call,
            lambda session, row, error: self.record_result(
                session, row, error, max_attempts=max_attempts, base_delay_s=base_delay_s, is_retryable=is_retryable
            ),
        )
