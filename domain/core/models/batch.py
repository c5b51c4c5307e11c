"""Outbound messages (batch-job triggers): the transactional outbox of the message bus."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
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

# ---------------------------------------------------------------------------------------------------
# Outbound messages (batch-job triggers): the transactional outbox of the message bus


class OutboundMessageStatus(enum.StrEnum):
    """pending -> published, never back (domain.batch.batch_jobs owns the move)."""

    PENDING = "pending"
    PUBLISHED = "published"


class OutboundMessage(Base):
    """One message to the bus, written in the producer's transaction; a relay publishes it to RabbitMQ
    (when configured) and marks it published. `message_id` is what consumers dedupe on."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        status_check("status", list(OutboundMessageStatus)),
        Index(
            "ix_outbound_messages_pending",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbound_messages_job_created_at", "job", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(200))
    exchange: Mapped[str] = mapped_column(String(200), default="")
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(100))
    job: Mapped[str] = mapped_column(String(100))
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default=OutboundMessageStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = created_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    alerted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = created_column()
    published_at: Mapped[datetime | None] = mapped_column()
