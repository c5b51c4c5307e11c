"""The seven-phase recovery pipeline: what each phase run records (what a trigger is and how one is
accepted: domain/phases/requests.py, its API re-exported here). No network here: the Dagster job
(orchestration_defs/phases.py) calls the integrations backend and the payment API between the
transactions below.

One trigger is processed in three short transactions of its own:

    begin     progress -> running, `phase_started` event, and the intent of what the run will do outside
              (phase 6: the learning record; phase 7: the proof packet row with its fee and idempotency key)
    (calls to the outside world, no transaction open)
    complete  progress -> completed, audit row, `phase_completed` (+ `prompt`) events, the trigger acked
    | fail    the trigger back to the queue with its backoff (or dead), audit row, progress -> failed,
              `phase_failed` event

`complete` acks the queue row in the same transaction as the state change, so a phase's effect is
recorded exactly when its trigger is done; a row whose claim was lost (StaleClaim) rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.core import notifications
from domain.core.models import (
    LearningRecord,
    NotificationChannel,
    PhaseAudit,
    PhaseOutcome,
    PhaseStatus,
    ProofPacket,
    ProofPacketStatus,
    QueueState,
    new_id,
    utcnow,
)
from domain.core.store import is_postgres
from domain.phases import phase_events
from domain.phases.phase_statements import BEGIN_SQL, COMPLETE_SQL, PROGRESS_UPSERT, SAME_PHASE_MOVES
from domain.phases.phases_money import (
    Route,
    minor_units,
    platform_fee,
    route,
)
from domain.phases.requests import (
    CLAIM_PHASES,
    KIND as KIND,
    NAMES,
    PHASES as PHASES,
    REQUESTS as REQUESTS,
    Accepted as Accepted,
    InvalidPhase as InvalidPhase,
    Phase4Request as Phase4Request,
    PhaseRequest as PhaseRequest,
    Posted as Posted,
    accept_many as accept_many,
    parse_phase as parse_phase,
    parse_request as parse_request,
    posted as posted,
)
from domain.queue import queue
from domain.queue.statements import Driver, Store
from domain.queue.triggers import PhaseTrigger

# -- progress: one row per (tenant, user, sync), never backwards ----------------------------------------
# (the moves allowed: phase_statements.SAME_PHASE_MOVES)
P = PhaseStatus


def percent(phase: int, status: PhaseStatus) -> int:
    done = phase if status is P.COMPLETED else phase - 1
    return done * 100 // 7


def progress_allowed(current_phase: int, current: PhaseStatus, phase: int, status: PhaseStatus) -> bool:
    if phase != current_phase:
        return phase > current_phase
    return status in SAME_PHASE_MOVES[current]


def advance_progress(
    session: Session,
    *,
    tenant_id: str,
    user_id: str,
    sync_id: str,
    phase: int,
    status: PhaseStatus,
    seller_id: str | None = None,
) -> bool:
    """Move the sync's progress to (phase, status) if that is forward; True if it moved. One statement
    (PROGRESS_UPSERT): the row is created, or updated where `progress_allowed` says so."""
    values = progress_values(tenant_id, user_id, sync_id, phase, status, seller_id)
    return session.execute(PROGRESS_UPSERT, values).scalar_one_or_none() is not None


def progress_values(
    tenant_id: str, user_id: str, sync_id: str, phase: int, status: PhaseStatus, seller_id: str | None = None
) -> dict[str, Any]:
    """PROGRESS_UPSERT's parameters (and the progress part of BEGIN_SQL's and COMPLETE_SQL's)."""
    now = utcnow()
    return {
        "progress_id": new_id(),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "sync_id": sync_id,
        "seller_id": seller_id,
        "phase": phase,
        "status": status.value,
        "percent": percent(phase, status),
        "now": now,
        "completed_at": now if (phase, status) == (7, P.COMPLETED) else None,
    }


# -- one trigger's run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseRow:
    """A claimed phase trigger, as the batch run holds it."""

    trigger_id: int
    claim_token: str
    attempt: int
    trigger: PhaseTrigger

    @property
    def held(self) -> tuple[int, str]:
        return (self.trigger_id, self.claim_token)


@dataclass
class Plan:
    """What `begin` decided the run must do outside, and what `complete` will record."""

    phase: int
    routes: list[dict[str, Any]] = field(default_factory=list)  # phase 4
    learning_record_id: str | None = None  # phase 6
    packet_id: str | None = None  # phase 7
    packet_status: str | None = None
    fee_minor: int | None = None
    fee_idempotency_key: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _event(session: Session, row: PhaseRow, type_: str, data: dict[str, Any]) -> None:
    t = row.trigger
    phase_events.append(
        session, tenant_id=t.tenant_id, user_id=t.user_id, sync_id=t.sync_id, phase=t.phase, type=type_, data=data
    )


# The phases whose `begin` (`complete`) writes nothing but BEGIN_SQL (COMPLETE_SQL) on PostgreSQL: the worker
# may run it on an autocommit connection, a transaction of its own in one round trip (no BEGIN, no COMMIT).
# The others write rows through the ORM too, in a Session's transaction.
ONE_STATEMENT_BEGIN = frozenset({1, 2, 3, 4, 5})
ONE_STATEMENT_COMPLETE = frozenset({1, 2, 3, 5})


def _orm(store: Store) -> Session:
    if not isinstance(store, Session):
        raise TypeError("this phase's step writes through the ORM: give it a Session")
    return store


def begin(store: Store, row: PhaseRow) -> Plan:
    t = row.trigger
    progress = progress_values(t.tenant_id, t.user_id, t.sync_id, t.phase, P.RUNNING, t.input.get("seller_id"))
    started = {"trigger_id": row.trigger_id, "attempt": row.attempt, "name": NAMES[t.phase]}
    if is_postgres(store):
        event = phase_events.values(t.tenant_id, t.user_id, t.sync_id, t.phase, "phase_started", started)
        Driver(store).raw.execute(BEGIN_SQL, {**progress, **event}, prepare=True)
    else:
        _orm(store).execute(PROGRESS_UPSERT, progress)
        _event(_orm(store), row, "phase_started", started)
    plan = Plan(t.phase)
    if t.phase == 4:
        request = Phase4Request.model_validate({"user_id": t.user_id, **t.input})
        plan.routes = [{**m.model_dump(mode="json"), "route": route(m.confidence).value} for m in request.matches]
    elif t.phase == 6:
        plan.learning_record_id = _learning_record(_orm(store), row).id
    elif t.phase == 7:
        packet = _proof_packet(_orm(store), row)
        plan.packet_id, plan.packet_status = packet.id, packet.status
        plan.fee_minor, plan.fee_idempotency_key = packet.fee_minor, packet.fee_idempotency_key
        plan.evidence = dict(packet.evidence)
    return plan


def _learning_record(session: Session, row: PhaseRow) -> LearningRecord:
    t = row.trigger
    claim, reason = str(t.input["claim_id"]), str(t.input["reason_code"])
    found = session.scalars(
        select(LearningRecord).where(
            LearningRecord.tenant_id == t.tenant_id,
            LearningRecord.user_id == t.user_id,
            LearningRecord.sync_id == t.sync_id,
            LearningRecord.claim_id == claim,
            LearningRecord.reason_code == reason,
        )
    ).one_or_none()
    if found is not None:
        return found
    details = {k: v for k, v in t.input.items() if k not in ("claim_id", "reason_code", "seller_id")}
    record = LearningRecord(
        tenant_id=t.tenant_id,
        user_id=t.user_id,
        sync_id=t.sync_id,
        seller_id=t.input.get("seller_id"),
        claim_id=claim,
        reason_code=reason,
        details=details,
        created_at=utcnow(),
    )
    session.add(record)
    session.flush()
    return record


def claim_match(session: Session, tenant_id: str, user_id: str, sync_id: str, claim_id: str) -> dict[str, Any]:
    """The phase-4 match of `claim_id` in this sync (its confidence and evidence), from the audit trail."""
    rows = session.scalars(
        select(PhaseAudit.details)
        .where(
            PhaseAudit.tenant_id == tenant_id,
            PhaseAudit.user_id == user_id,
            PhaseAudit.sync_id == sync_id,
            PhaseAudit.phase == 4,
            PhaseAudit.outcome == PhaseOutcome.COMPLETED.value,
        )
        .order_by(PhaseAudit.id.desc())
    )
    for details in rows:
        for match in details.get("routes", []):
            if match.get("claim_id") == claim_id:
                return dict(match)
    return {}


def _proof_packet(session: Session, row: PhaseRow) -> ProofPacket:
    """The packet of this payout: made once (fee computed, idempotency key fixed), found again on a retry."""
    t = row.trigger
    payout = str(t.input["payout_id"])
    found = session.scalars(
        select(ProofPacket).where(
            ProofPacket.tenant_id == t.tenant_id, ProofPacket.user_id == t.user_id, ProofPacket.payout_id == payout
        )
    ).one_or_none()
    if found is not None:
        return found
    amount, currency = Decimal(str(t.input["amount"])), str(t.input["currency"])
    fee = platform_fee(amount, currency)
    now = utcnow()
    packet = ProofPacket(
        tenant_id=t.tenant_id,
        user_id=t.user_id,
        sync_id=t.sync_id,
        claim_id=str(t.input["claim_id"]),
        payout_id=payout,
        currency=currency,
        payout_amount=str(amount),
        fee_amount=str(fee),
        fee_minor=minor_units(fee, currency),
        status=ProofPacketStatus.PENDING.value,
        evidence=claim_match(session, t.tenant_id, t.user_id, t.sync_id, str(t.input["claim_id"])),
        created_at=now,
        updated_at=now,
    )
    packet.id = new_id()
    packet.fee_idempotency_key = f"platform-fee:{packet.id}"
    session.add(packet)
    session.flush()
    return packet


def record_charge(session: Session, packet_id: str, payment_intent_id: str) -> None:
    """pending -> charged (the payment intent succeeded); a charged or ready packet stays as it is."""
    packet = session.get(ProofPacket, packet_id, with_for_update=True)
    if packet is None:
        raise LookupError(f"proof packet {packet_id} not found")
    if packet.status == ProofPacketStatus.PENDING.value:
        packet.status = ProofPacketStatus.CHARGED.value
        packet.payment_intent_id = payment_intent_id
        packet.updated_at = utcnow()


def complete(
    store: Store,
    row: PhaseRow,
    plan: Plan,
    *,
    run_id: str | None,
    started_at: datetime,
    duration_s: float,
    result: dict[str, Any] | None = None,
) -> None:
    """The phase is done: its prompts, learning record and proof packet, then the trigger acked, progress,
    audit row and `phase_completed` event (one statement on PostgreSQL), all in the caller's transaction;
    StaleClaim if this claim no longer holds the trigger (the caller rolls back: nothing is recorded)."""
    t = row.trigger
    result = dict(result or {})
    details: dict[str, Any] = {"result": result}
    if t.phase in CLAIM_PHASES:
        details["claim_id"] = t.input["claim_id"]  # what a repeated call back is recognised by
    if t.phase == 4:
        details["routes"] = plan.routes
        for match in plan.routes:
            if match["route"] == Route.SMART_PROMPT.value:
                _prompt(_orm(store), row, match)
    if t.phase == 6 and plan.learning_record_id:
        record = _orm(store).get(LearningRecord, plan.learning_record_id)
        if record is not None and record.pipeline_triggered_at is None:
            record.pipeline_job_id = result.get("pipeline_job_id")
            record.pipeline_triggered_at = utcnow()
        details["learning_record_id"] = plan.learning_record_id
    if t.phase == 7 and plan.packet_id:
        packet = _orm(store).get(ProofPacket, plan.packet_id, with_for_update=True)
        assert packet is not None
        if packet.status != ProofPacketStatus.READY.value:
            packet.status = ProofPacketStatus.READY.value
            packet.payment_intent_id = packet.payment_intent_id or result.get("payment_intent_id")
            packet.json_sha256 = result.get("json_sha256")
            packet.pdf_path = result.get("pdf_path")
            packet.json_path = result.get("json_path")
            packet.updated_at = utcnow()
        details["proof_packet_id"] = packet.id
        result = {**result, "proof_packet_id": packet.id, "fee": packet.fee_amount, "currency": packet.currency}
    summary = {k: v for k, v in result.items() if k not in ("pdf_path", "json_path")}
    completed = {"trigger_id": row.trigger_id, "name": NAMES[t.phase], **summary}
    progress = progress_values(t.tenant_id, t.user_id, t.sync_id, t.phase, P.COMPLETED)
    if is_postgres(store):
        event = phase_events.values(t.tenant_id, t.user_id, t.sync_id, t.phase, "phase_completed", completed)
        params = {
            **progress,
            **event,
            "trigger_id": row.trigger_id,
            "claim_token": row.claim_token,
            "run_id": run_id,
            "attempt": row.attempt,
            "outcome": PhaseOutcome.COMPLETED.value,
            "duration_s": _recorded(duration_s),
            "details": Jsonb(details),
            "started_at": started_at,
        }
        if Driver(store).raw.execute(COMPLETE_SQL, params, prepare=True).fetchone() is None:
            raise _stale(row)
        return
    session = _orm(store)
    if not queue.ack_many(session, [row.held], run_id=run_id):
        raise _stale(row)
    session.execute(PROGRESS_UPSERT, progress)
    _audit(session, row, PhaseOutcome.COMPLETED, run_id, started_at, duration_s, None, details)
    _event(session, row, "phase_completed", completed)


def _stale(row: PhaseRow) -> queue.StaleClaim:
    return queue.StaleClaim(f"phase trigger {row.trigger_id} is no longer held by this run")


def _recorded(duration_s: float) -> float:
    """A duration as the audit row keeps it (never negative, to the microsecond)."""
    return round(max(duration_s, 0.0), 6)


def _prompt(session: Session, row: PhaseRow, match: Mapping[str, Any]) -> None:
    t = row.trigger
    payload = {
        "claim_id": match["claim_id"],
        "amount": match["amount"],
        "currency": match["currency"],
        "confidence": match["confidence"],
    }
    notifications.notify(
        session,
        channel=NotificationChannel.IN_APP,
        template="claim_prompt",
        recipient=t.user_id,
        payload={**payload, "sync_id": t.sync_id},
        dedup_key=f"phase_prompt:{t.tenant_id}:{t.user_id}:{t.sync_id}:{match['claim_id']}",
        tenant_id=t.tenant_id,
    )
    _event(session, row, "prompt", {"kind": "confirm_claim", **payload})


def fail(
    session: Session,
    row: PhaseRow,
    *,
    run_id: str | None,
    error: str,
    retryable: bool,
    started_at: datetime,
    duration_s: float,
) -> QueueState | None:
    """The phase failed: the trigger goes back to the queue with its kind's backoff (or is dead), and
    the failure is recorded. None when this claim no longer holds the trigger (nothing recorded)."""
    try:
        state = queue.fail(session, row.trigger_id, row.claim_token, error, retryable=retryable, run_id=run_id)
    except queue.StaleClaim:
        return None
    t = row.trigger
    advance_progress(
        session, tenant_id=t.tenant_id, user_id=t.user_id, sync_id=t.sync_id, phase=t.phase, status=P.FAILED
    )
    outcome = PhaseOutcome.DEAD if state is QueueState.DEAD else PhaseOutcome.FAILED
    _audit(session, row, outcome, run_id, started_at, duration_s, error, {"retryable": retryable})
    _event(
        session,
        row,
        "phase_failed",
        {
            "trigger_id": row.trigger_id,
            "name": NAMES[t.phase],
            "error": error[:500],
            "final": outcome is PhaseOutcome.DEAD,
        },
    )
    return state


def _audit(
    session: Session,
    row: PhaseRow,
    outcome: PhaseOutcome,
    run_id: str | None,
    started_at: datetime,
    duration_s: float,
    error: str | None,
    details: dict[str, Any],
) -> None:
    t = row.trigger
    session.add(
        PhaseAudit(
            tenant_id=t.tenant_id,
            user_id=t.user_id,
            sync_id=t.sync_id,
            phase=t.phase,
            trigger_id=row.trigger_id,
            run_id=run_id,
            attempt=row.attempt,
            outcome=outcome.value,
            duration_s=_recorded(duration_s),
            error=error[:4000] if error else None,
            details=details,
            started_at=started_at,
            finished_at=utcnow(),
        )
    )
