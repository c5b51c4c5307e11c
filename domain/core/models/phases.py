"""The seven-phase recovery pipeline."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.models.base import (
    Base,
    BigId,
    created_column,
    id_column,
    status_check,
)


class PhaseStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


# ---------------------------------------------------------------------------------------------------
# The seven-phase recovery pipeline


class SyncProgress(Base):
    """One user's progress through one sync: the furthest phase reached and its status. It never moves
    backwards (domain.phases.phases.advance_progress holds the allowed moves)."""

    __tablename__ = "sync_progress"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "sync_id"),
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        CheckConstraint("percent BETWEEN 0 AND 100", name="percent_range"),
        status_check("status", list(PhaseStatus)),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    seller_id: Mapped[str | None] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PhaseStatus.PENDING.value)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()
    completed_at: Mapped[datetime | None] = mapped_column()


class PhaseOutcome(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # the trigger goes back to the queue with its backoff
    DEAD = "dead"  # failed on its last attempt, or permanently


class PhaseAudit(Base):
    """One row per phase run of one trigger: what /metrics and the sync view read."""

    __tablename__ = "phase_audit"
    __table_args__ = (
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        status_check("outcome", list(PhaseOutcome), name="outcome_valid"),
        Index("ix_phase_audit_tenant_id_user_id_sync_id", "tenant_id", "user_id", "sync_id"),
        Index("ix_phase_audit_finished_at", "finished_at"),
        # The rows not yet folded into phase_metrics: what a scrape adds to the totals, and the next fold.
        Index("ix_phase_audit_uncounted", "id", postgresql_where=text("NOT counted"), sqlite_where=text("NOT counted")),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    trigger_id: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime] = mapped_column()
    counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))  # in phase_metrics


class PhaseMetric(Base):
    """/metrics' phase counters, folded from the phase audit rows (domain/phases/phase_metrics.py): per phase,
    series (`duration`: a phase's own run time, every outcome; `latency`: enqueue -> completed), outcome
    and histogram bucket (`le`, its upper bound in seconds; infinity for the last), the observations and
    their sum. Only ever added to, whatever is pruned."""

    __tablename__ = "phase_metrics"
    __table_args__ = (CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),)
    phase: Mapped[int] = mapped_column(Integer, primary_key=True)
    series: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)


class LearningRecord(Base):
    """Phase 6: a rejected claim, kept for the learning pipeline (triggered once per record)."""

    __tablename__ = "learning_records"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id", "sync_id", "claim_id", "reason_code"),)
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    seller_id: Mapped[str | None] = mapped_column(String(200))
    claim_id: Mapped[str] = mapped_column(String(200))
    reason_code: Mapped[str] = mapped_column(String(100))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    pipeline_job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_column()
    pipeline_triggered_at: Mapped[datetime | None] = mapped_column()


class ProofPacketStatus(enum.StrEnum):
    """pending (fee computed, nothing charged) -> charged (payment intent succeeded) -> ready (files written)."""

    PENDING = "pending"
    CHARGED = "charged"
    READY = "ready"


class ProofPacket(Base):
    """Phase 7: the payout, its platform fee and the charge, and the packet's files under PROOF_PACKET_DIR.
    Amounts are exact decimal text; `fee_minor` is what was charged, in the currency's minor units."""

    __tablename__ = "proof_packets"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "payout_id"),
        UniqueConstraint("fee_idempotency_key"),
        status_check("status", list(ProofPacketStatus)),
        Index("ix_proof_packets_tenant_id_user_id", "tenant_id", "user_id"),
    )
    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    sync_id: Mapped[str] = mapped_column(String(200))
    claim_id: Mapped[str] = mapped_column(String(200))
    payout_id: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    payout_amount: Mapped[str] = mapped_column(String(40))
    fee_amount: Mapped[str] = mapped_column(String(40))
    fee_minor: Mapped[int] = mapped_column(BigInteger)
    fee_idempotency_key: Mapped[str] = mapped_column(String(200))
    payment_intent_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ProofPacketStatus.PENDING.value)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    json_sha256: Mapped[str | None] = mapped_column(String(64))
    pdf_path: Mapped[str | None] = mapped_column(String(1000))
    json_path: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = created_column()


class PhaseEventType(enum.StrEnum):
    """What a user's live stream carries (domain.phases.phase_events appends, the live side reads)."""

    PHASE_STARTED = "phase_started"
    PHASE_COMPLETED = "phase_completed"
    PHASE_FAILED = "phase_failed"
    PROMPT = "prompt"


class PhaseEvent(Base):
    """One event of a user's stream, numbered `seq` per (tenant, user) from 1 with no reuse (the counter
    lives in phase_event_sequences, so pruning old events never lets a number come back)."""

    __tablename__ = "phase_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "seq"),
        CheckConstraint("phase BETWEEN 1 AND 7", name="phase_range"),
        status_check("type", list(PhaseEventType), name="type_valid"),
        Index("ix_phase_events_created_at", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))
    sync_id: Mapped[str] = mapped_column(String(200))
    phase: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_column()


class PhaseEventSequence(Base):
    """The last `seq` handed out per (tenant, user): an upsert on this row serialises concurrent appends
    for one user on both backends (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "phase_event_sequences"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
