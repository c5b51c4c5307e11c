"""The trigger queue."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.models.base import (
    Base,
    BigId,
    created_column,
    status_check,
)


class QueueState(enum.StrEnum):
    """States of a trigger_queue row; the moves between them are written down in domain.queue.queue."""

    AVAILABLE = "available"
    CLAIMED = "claimed"
    LAUNCHED = "launched"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"


QUEUE_LIVE_STATES = (QueueState.AVAILABLE, QueueState.CLAIMED, QueueState.LAUNCHED)


# ---------------------------------------------------------------------------------------------------
# The trigger queue


class TriggerQueue(Base):
    __tablename__ = "trigger_queue"
    __table_args__ = (
        status_check("state", list(QueueState)),
        CheckConstraint("attempts >= 0 AND max_attempts > 0", name="attempts_valid"),
        # A claim token exists exactly while a worker or a run holds the row; a claim has a lease.
        CheckConstraint("(state IN ('claimed', 'launched')) = (claim_token IS NOT NULL)", name="token_consistent"),
        CheckConstraint("state <> 'claimed' OR lease_expires_at IS NOT NULL", name="lease_consistent"),
        # Dedup while a trigger is live: a second request returns the pending one; once it is finished,
        # the same key may be enqueued again (a new build of the same version, say).
        Index(
            "uq_trigger_queue_live_dedup_key",
            "kind",
            "dedup_key",
            unique=True,
            sqlite_where=text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
            postgresql_where=text("dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"),
        ),
        # Partial indexes over the live states keep claims fast however many finished rows there are.
        Index(
            "ix_trigger_queue_available",
            "kind",
            "available_at",
            "id",
            sqlite_where=text("state = 'available'"),
            postgresql_where=text("state = 'available'"),
        ),
        Index(
            "ix_trigger_queue_claimed_lease",
            "lease_expires_at",
            sqlite_where=text("state = 'claimed'"),
            postgresql_where=text("state = 'claimed'"),
        ),
        Index(
            "ix_trigger_queue_launched",
            "run_id",
            sqlite_where=text("state = 'launched'"),
            postgresql_where=text("state = 'launched'"),
        ),
        # Pruning's index; finished rows only, so a claim (a new row version) writes no NULL entry.
        Index(
            "ix_trigger_queue_finished_at",
            "finished_at",
            sqlite_where=text("finished_at IS NOT NULL"),
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dedup_key: Mapped[str | None] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16), default=QueueState.AVAILABLE.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    available_at: Mapped[datetime] = created_column()
    claimed_at: Mapped[datetime | None] = mapped_column()
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    claim_token: Mapped[str | None] = mapped_column(String(36))
    worker: Mapped[str | None] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    finished_at: Mapped[datetime | None] = mapped_column()
