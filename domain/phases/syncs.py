"""Reading a user's sync (its progress, phases, audit and proof packets) and a proof packet's document."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.core.models import (
    PhaseAudit,
    PhaseOutcome,
    ProofPacket,
    ProofPacketStatus,
    SyncProgress,
)
from domain.core.urls import path_segment
from domain.phases.phases_money import FEE_RATE, to_minor_unit
from domain.phases.requests import (
    PHASES,
)


def sync_path(user_id: str, sync_id: str) -> str:
    """Where a sync is read (the phase POST's Location)."""
    return f"/v1/users/{path_segment(user_id)}/syncs/{path_segment(sync_id)}"


def sync_view(session: Session, tenant_id: str, user_id: str, sync_id: str) -> dict[str, Any] | None:
    """GET /v1/users/{user}/syncs/{sync}: the progress row, each phase's latest outcome, the audit rows."""
    progress = session.scalars(
        select(SyncProgress).where(
            SyncProgress.tenant_id == tenant_id, SyncProgress.user_id == user_id, SyncProgress.sync_id == sync_id
        )
    ).one_or_none()
    if progress is None:
        return None
    audit = session.scalars(
        select(PhaseAudit)
        .where(PhaseAudit.tenant_id == tenant_id, PhaseAudit.user_id == user_id, PhaseAudit.sync_id == sync_id)
        .order_by(PhaseAudit.id)
    ).all()
    phases: dict[str, str] = {}
    for entry in audit:
        if phases.get(str(entry.phase)) != PhaseOutcome.COMPLETED.value:
            phases[str(entry.phase)] = entry.outcome
    packets = session.scalars(
        select(ProofPacket)
        .where(ProofPacket.tenant_id == tenant_id, ProofPacket.user_id == user_id, ProofPacket.sync_id == sync_id)
        .order_by(ProofPacket.created_at)
    ).all()
    return {
        "user_id": user_id,
        "sync_id": sync_id,
        "seller_id": progress.seller_id,
        "progress": {
            "phase": progress.phase,
            "status": progress.status,
            "percent": progress.percent,
            "started_at": progress.started_at,
            "updated_at": progress.updated_at,
            "completed_at": progress.completed_at,
        },
        "phases": {str(p): phases.get(str(p), "pending") for p in PHASES},
        "audit": [
            {
                "id": a.id,
                "phase": a.phase,
                "outcome": a.outcome,
                "duration_s": a.duration_s,
                "error": a.error,
                "attempt": a.attempt,
                "trigger_id": a.trigger_id,
                "run_id": a.run_id,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
            }
            for a in audit
        ],
        "proof_packets": [
            {
                "id": p.id,
                "claim_id": p.claim_id,
                "payout_id": p.payout_id,
                "status": p.status,
                "href": f"/v1/users/{path_segment(user_id)}/proof-packets/{path_segment(p.id)}",
            }
            for p in packets
        ],
    }


def is_validation_error(exc: BaseException) -> bool:
    return isinstance(exc, ValidationError)


def packet_document(session: Session, packet_id: str) -> dict[str, Any]:
    """What the proof packet's PDF and JSON twin say, for the customer: seller, claim, evidence, gross
    payout, the platform fee and the net payout, amounts as decimal text in the currency's major unit.
    Internal fields (the tenant, the fee's idempotency key, the claim's routing) stay in the store."""
    packet = session.get(ProofPacket, packet_id)
    if packet is None:
        raise LookupError(f"proof packet {packet_id} not found")
    seller_id = session.scalar(
        select(SyncProgress.seller_id).where(
            SyncProgress.tenant_id == packet.tenant_id,
            SyncProgress.user_id == packet.user_id,
            SyncProgress.sync_id == packet.sync_id,
        )
    )
    match = dict(packet.evidence)
    currency = packet.currency
    gross = to_minor_unit(Decimal(packet.payout_amount), currency)
    fee = to_minor_unit(Decimal(packet.fee_amount), currency)
    return {
        "id": packet.id,
        "user_id": packet.user_id,
        "sync_id": packet.sync_id,
        "seller": {"id": seller_id or None},
        "created_at": packet.created_at.astimezone(UTC).isoformat(timespec="seconds"),
        "claim": {
            "claim_id": packet.claim_id,
            "confidence": match.get("confidence"),
            "amount": match.get("amount"),
            "currency": match.get("currency"),
        },
        "evidence": list(match.get("evidence_ids", [])),
        "payout": {"payout_id": packet.payout_id, "amount": str(gross), "currency": currency},
        "fee": {
            "rate": str(FEE_RATE),
            "rounding": "half-up to the currency's minor unit",
            "amount": str(fee),
            "currency": currency,
            "payment_intent_id": packet.payment_intent_id,
        },
        "net_payout": {"amount": str(gross - fee), "currency": currency},
    }


def find_packet(session: Session, tenant_ids: frozenset[str], user_id: str, packet_id: str) -> ProofPacket | None:
    """A ready proof packet of this user in one of `tenant_ids` (any other is simply not found)."""
    return session.scalars(
        select(ProofPacket).where(
            ProofPacket.id == packet_id,
            ProofPacket.user_id == user_id,
            ProofPacket.tenant_id.in_(tenant_ids),
            ProofPacket.status == ProofPacketStatus.READY.value,
        )
    ).one_or_none()
