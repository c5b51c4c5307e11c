"""The seven-phase recovery pipeline: what a phase trigger is, how one is accepted, and what each phase
run records. No network here: the Dagster job (orchestration_defs/phases.py) calls the integrations
backend and the payment API between the transactions below.

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

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from domain.core import notifications
from domain.core.models import (
    JSONType,
    LearningRecord,
    NotificationChannel,
    PhaseAudit,
    PhaseOutcome,
    PhaseStatus,
    ProofPacket,
    ProofPacketStatus,
    QueueState,
    SyncProgress,
    UTCDateTime,
    new_id,
    utcnow,
)
from domain.core.urls import path_segment
from domain.phases import phase_events
from domain.phases.phases_money import (
    CURRENCIES,
    FEE_RATE,
    Route,
    exponent,
    minor_units,
    platform_fee,
    route,
    to_minor_unit,
)
from domain.queue import queue
from domain.queue.triggers import PhaseTrigger

KIND = "phase"
CLAIM_PHASES = frozenset({5, 6, 7})  # these come once per claim of a sync
DEDUP_KEY_LENGTH = 300  # trigger_queue.dedup_key
PHASES = range(1, 8)
NAMES = {
    1: "oauth_completed",
    2: "sync_completed",
    3: "detection_completed",
    4: "evidence_matched",
    5: "claim_submitted",
    6: "claim_rejected",
    7: "payout_received",
}


# -- what callers send ---------------------------------------------------------------------------------


def _currency(value: str) -> str:
    code = value.upper()
    if code not in CURRENCIES:
        raise ValueError("not an ISO 4217 currency code")
    return code


Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
Amount = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6, allow_inf_nan=False)]
Ident = Annotated[str, Field(min_length=1, max_length=200)]


def _in_minor_units(amount: Decimal, info: ValidationInfo) -> Decimal:
    """An amount is a whole number of its currency's minor unit (12.34 USD, 500 JPY): 1.23456 USD is no
    amount a payment can carry. Its model declares `currency` before `amount`, so the code is known
    here (an unknown one has its own error already)."""
    currency = info.data.get("currency")
    if currency is not None and amount != to_minor_unit(amount, currency):
        raise ValueError(f"more decimal places than {currency}'s minor unit ({exponent(currency)})")
    return amount


class PhaseRequest(BaseModel):
    """The body every phase takes; callers' other metadata is kept with the trigger."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    user_id: Ident
    sync_id: Ident | None = None
    seller_id: Ident | None = None


class Match(BaseModel):
    model_config = ConfigDict(extra="allow")

    claim_id: Ident
    confidence: Annotated[Decimal, Field(ge=0, le=1, allow_inf_nan=False)]
    currency: Currency
    amount: Amount
    evidence_ids: list[Ident] = Field(default_factory=list)

    _amount_in_minor_units = field_validator("amount")(_in_minor_units)


class Phase4Request(PhaseRequest):
    matches: list[Match]


class Phase5Request(PhaseRequest):
    claim_id: Ident
    currency: Currency
    amount: Amount

    _amount_in_minor_units = field_validator("amount")(_in_minor_units)


class Phase6Request(PhaseRequest):
    claim_id: Ident
    reason_code: Annotated[str, Field(min_length=1, max_length=100)]


class Phase7Request(PhaseRequest):
    claim_id: Ident
    payout_id: Ident
    currency: Currency
    amount: Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=6, allow_inf_nan=False)]

    _amount_in_minor_units = field_validator("amount")(_in_minor_units)


REQUESTS: Mapping[int, type[PhaseRequest]] = {
    1: PhaseRequest,
    2: PhaseRequest,
    3: PhaseRequest,
    4: Phase4Request,
    5: Phase5Request,
    6: Phase6Request,
    7: Phase7Request,
}


class InvalidPhase(ValueError):
    pass


def parse_phase(text: str) -> int:
    """The path's phase number: an integer 1-7, else InvalidPhase."""
    if not re.fullmatch(r"[1-7]", text.strip()):
        raise InvalidPhase(f"phaseNumber must be an integer from 1 to 7, not {text!r}")
    return int(text)


def parse_request(phase: int, body: Any) -> PhaseRequest:
    """The phase's model of `body`; pydantic's ValidationError names a bad field."""
    return REQUESTS[phase].model_validate(body)


@dataclass(frozen=True)
class Accepted:
    trigger_id: int
    sync_id: str
    phase: int


def default_sync_id(phase: int, user_id: str, now: datetime) -> str:
    prefix = "oauth" if phase == 1 else f"phase{phase}"
    return f"{prefix}_{user_id}_{int(now.timestamp())}"


def declared_claim(request: PhaseRequest) -> str | None:
    """The claim of a phase that declares one (5-7), not a caller's metadata of that name (any JSON)."""
    claim: str | None = getattr(request, "claim_id", None) if "claim_id" in type(request).model_fields else None
    return claim


def dedup_key(tenant_id: str, user_id: str, sync_id: str, phase: int, request: PhaseRequest) -> str:
    """(user, sync, phase) - plus the claim for phases 5-7, which come once per claim of a sync. Ids that
    hold the separator or would not fit the column are hashed, so two triggers never share a key."""
    parts = [KIND, tenant_id, user_id, sync_id, str(phase)]
    claim = declared_claim(request)
    if claim is not None:
        parts.append(claim)
    key = ":".join(parts)
    if len(key) <= DEDUP_KEY_LENGTH and not any(":" in part for part in parts):
        return key
    return f"{KIND}:sha256:{hashlib.sha256(json.dumps(parts).encode()).hexdigest()}"


@dataclass(frozen=True)
class Posted:
    """A phase POST, as the API read it (`posted`): its sync id is resolved once, so a generated one is
    the POST's own however often its trigger is written."""

    tenant_id: str
    phase: int
    request: PhaseRequest
    sync_id: str


def posted(tenant_id: str, phase: int, request: PhaseRequest) -> Posted:
    sync_id = request.sync_id or default_sync_id(phase, request.user_id, utcnow())
    return Posted(tenant_id, phase, request, sync_id)


def accept_many(session: queue.Store, posts: Sequence[Posted]) -> list[Accepted | queue.QueueError]:
    """Queue the posts' triggers on the caller's connection (autocommit: queue.enqueue_keyed), one outcome
    per post, in order. The same (user, sync, phase[, claim]) with the same body while its trigger is
    pending is that trigger; with another body, queue.DedupConflict. Once that phase is completed, a
    repeat (a call back sent again) is the trigger that completed it: nothing is queued again."""
    done = completed_triggers(session, posts)
    fresh = [post for post in posts if _done_key(post) not in done]
    queued = iter(_enqueue(session, fresh))
    return [
        Accepted(done[key], post.sync_id, post.phase) if (key := _done_key(post)) in done else next(queued)
        for post in posts
    ]


DoneKey = tuple[str, str, str, int, str | None]  # tenant, user, sync, phase, claim (phases 5-7)


def _done_key(post: Posted) -> DoneKey:
    return (post.tenant_id, post.request.user_id, post.sync_id, post.phase, declared_claim(post.request))


# The completed phases of some syncs, for completed_triggers: one text, compiled once (a Core select with
# a tuple IN and a JSON path cost four times its round trip on a lone POST). The IN lists give a superset
# of the posts' (tenant, user, sync), filtered exactly in Python; only the claim phases' details are read.
COMPLETED_PHASES = (
    text(
        "SELECT tenant_id, user_id, sync_id, phase, trigger_id, "
        f"CASE WHEN phase IN ({', '.join(map(str, sorted(CLAIM_PHASES)))}) THEN details END AS details "
        "FROM phase_audit WHERE outcome = 'completed' AND trigger_id IS NOT NULL AND tenant_id IN :tenants "
        "AND user_id IN :users AND sync_id IN :syncs AND phase IN :phases"
    )
    .bindparams(*(bindparam(name, expanding=True) for name in ("tenants", "users", "syncs", "phases")))
    .columns(details=JSONType)
)


def completed_triggers(session: queue.Store, posts: Sequence[Posted]) -> dict[DoneKey, int]:
    """The posts' (user, sync, phase[, claim]) already completed, each with the trigger that completed it.
    The evidence is the phase audit (kept for good, unlike finished queue rows): one indexed read."""
    if not posts:
        return {}
    wanted = {_done_key(post) for post in posts}
    rows = session.execute(
        COMPLETED_PHASES,
        {
            "tenants": sorted({key[0] for key in wanted}),
            "users": sorted({key[1] for key in wanted}),
            "syncs": sorted({key[2] for key in wanted}),
            "phases": sorted({key[3] for key in wanted}),
        },
    )
    done: dict[DoneKey, int] = {}
    for tenant_id, user_id, sync_id, phase, trigger_id, details in rows:
        key = (tenant_id, user_id, sync_id, phase, (details or {}).get("claim_id"))
        if key in wanted:
            done.setdefault(key, trigger_id)
    return done


def _enqueue(session: queue.Store, posts: Sequence[Posted]) -> list[Accepted | queue.QueueError]:
    if not posts:
        return []
    triggers = [
        queue.Keyed(
            post.tenant_id,
            PhaseTrigger(
                tenant_id=post.tenant_id,
                user_id=post.request.user_id,
                sync_id=post.sync_id,
                phase=post.phase,
                input=post.request.model_dump(mode="json", exclude={"user_id", "sync_id"}, exclude_none=True),
            ).model_dump(mode="json"),
            dedup_key(post.tenant_id, post.request.user_id, post.sync_id, post.phase, post.request),
        )
        for post in posts
    ]
    outcomes = queue.enqueue_keyed(session, KIND, triggers)
    return [
        outcome if isinstance(outcome, queue.QueueError) else Accepted(outcome, post.sync_id, post.phase)
        for post, outcome in zip(posts, outcomes, strict=True)
    ]


# -- progress: one row per (tenant, user, sync), never backwards ----------------------------------------

P = PhaseStatus
# Moves within one phase; any status of a later phase may follow any status of an earlier one; an
# earlier phase never follows a later one (a late or repeated trigger leaves the progress as it is).
SAME_PHASE_MOVES: Mapping[PhaseStatus, frozenset[PhaseStatus]] = {
    P.PENDING: frozenset({P.RUNNING, P.COMPLETED, P.FAILED}),
    P.RUNNING: frozenset({P.COMPLETED, P.FAILED}),
    P.FAILED: frozenset({P.RUNNING, P.COMPLETED}),
    P.COMPLETED: frozenset(),
}


def percent(phase: int, status: PhaseStatus) -> int:
    done = phase if status is P.COMPLETED else phase - 1
    return done * 100 // 7


def progress_allowed(current_phase: int, current: PhaseStatus, phase: int, status: PhaseStatus) -> bool:
    if phase != current_phase:
        return phase > current_phase
    return status in SAME_PHASE_MOVES[current]


def _quoted(values: Any) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


# progress_allowed as SQL over the stored row (sync_progress) and the proposed one (excluded), written
# from the same table of moves; one text for both backends (both have ON CONFLICT ... DO UPDATE ...
# WHERE and RETURNING), compiled once (the dialects' insert() constructs are never cached).
_FORWARD = " OR ".join(
    f"(sync_progress.status = '{current.value}' AND excluded.status IN ({_quoted(moves)}))"
    for current, moves in SAME_PHASE_MOVES.items()
    if moves
)
PROGRESS_UPSERT = text(
    "INSERT INTO sync_progress (id, tenant_id, user_id, sync_id, seller_id, phase, status, percent, started_at, "
    "updated_at, completed_at) VALUES (:id, :tenant_id, :user_id, :sync_id, :seller_id, :phase, :status, :percent, "
    ":now, :now, :completed_at) "
    "ON CONFLICT (tenant_id, user_id, sync_id) DO UPDATE SET phase = excluded.phase, status = excluded.status, "
    "updated_at = excluded.updated_at, "
    "percent = CASE WHEN excluded.percent > sync_progress.percent THEN excluded.percent "
    "ELSE sync_progress.percent END, "
    "seller_id = COALESCE(NULLIF(sync_progress.seller_id, ''), excluded.seller_id), "
    "completed_at = COALESCE(excluded.completed_at, sync_progress.completed_at) "
    f"WHERE excluded.phase > sync_progress.phase OR (excluded.phase = sync_progress.phase AND ({_FORWARD})) "
    "RETURNING id"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("completed_at", type_=UTCDateTime()))


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
    now = utcnow()
    values = {
        "id": new_id(),
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
    return session.execute(PROGRESS_UPSERT, values).scalar_one_or_none() is not None


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


def begin(session: Session, row: PhaseRow) -> Plan:
    t = row.trigger
    seller = t.input.get("seller_id")
    advance_progress(
        session,
        tenant_id=t.tenant_id,
        user_id=t.user_id,
        sync_id=t.sync_id,
        phase=t.phase,
        status=P.RUNNING,
        seller_id=seller,
    )
    _event(
        session, row, "phase_started", {"trigger_id": row.trigger_id, "attempt": row.attempt, "name": NAMES[t.phase]}
    )
    plan = Plan(t.phase)
    if t.phase == 4:
        request = Phase4Request.model_validate({"user_id": t.user_id, **t.input})
        plan.routes = [{**m.model_dump(mode="json"), "route": route(m.confidence).value} for m in request.matches]
    elif t.phase == 6:
        plan.learning_record_id = _learning_record(session, row).id
    elif t.phase == 7:
        packet = _proof_packet(session, row)
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
    session: Session,
    row: PhaseRow,
    plan: Plan,
    *,
    run_id: str | None,
    started_at: datetime,
    duration_s: float,
    result: dict[str, Any] | None = None,
) -> None:
    """The phase is done: ack the trigger (StaleClaim if this claim lost it: the caller rolls back), then
    progress, audit, events, prompts, learning record and proof packet in the same transaction."""
    if not queue.ack_many(session, [row.held], run_id=run_id):
        raise queue.StaleClaim(f"phase trigger {row.trigger_id} is no longer held by this run")
    t = row.trigger
    result = dict(result or {})
    advance_progress(
        session, tenant_id=t.tenant_id, user_id=t.user_id, sync_id=t.sync_id, phase=t.phase, status=P.COMPLETED
    )
    details: dict[str, Any] = {"result": result}
    if t.phase in CLAIM_PHASES:
        details["claim_id"] = t.input["claim_id"]  # what a repeated call back is recognised by
    if t.phase == 4:
        details["routes"] = plan.routes
        for match in plan.routes:
            if match["route"] == Route.SMART_PROMPT.value:
                _prompt(session, row, match)
    if t.phase == 6 and plan.learning_record_id:
        record = session.get(LearningRecord, plan.learning_record_id)
        if record is not None and record.pipeline_triggered_at is None:
            record.pipeline_job_id = result.get("pipeline_job_id")
            record.pipeline_triggered_at = utcnow()
        details["learning_record_id"] = plan.learning_record_id
    if t.phase == 7 and plan.packet_id:
        packet = session.get(ProofPacket, plan.packet_id, with_for_update=True)
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
    _audit(session, row, PhaseOutcome.COMPLETED, run_id, started_at, duration_s, None, details)
    summary = {k: v for k, v in result.items() if k not in ("pdf_path", "json_path")}
    _event(session, row, "phase_completed", {"trigger_id": row.trigger_id, "name": NAMES[t.phase], **summary})


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
            duration_s=round(max(duration_s, 0.0), 6),
            error=error[:4000] if error else None,
            details=details,
            started_at=started_at,
            finished_at=utcnow(),
        )
    )


# -- reading -------------------------------------------------------------------------------------------


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
    """What the proof packet's PDF and JSON twin say: claim, evidence, payout, fee."""
    packet = session.get(ProofPacket, packet_id)
    if packet is None:
        raise LookupError(f"proof packet {packet_id} not found")
    match = dict(packet.evidence)
    return {
        "id": packet.id,
        "tenant_id": packet.tenant_id,
        "user_id": packet.user_id,
        "sync_id": packet.sync_id,
        "created_at": packet.created_at.isoformat(),
        "claim": {
            "claim_id": packet.claim_id,
            "confidence": match.get("confidence"),
            "amount": match.get("amount"),
            "currency": match.get("currency"),
            "route": match.get("route"),
        },
        "evidence": list(match.get("evidence_ids", [])),
        "payout": {"payout_id": packet.payout_id, "amount": packet.payout_amount, "currency": packet.currency},
        "fee": {
            "rate": str(FEE_RATE),
            "rounding": "half-up to the currency's minor unit",
            "amount": packet.fee_amount,
            "currency": packet.currency,
            "minor_units": packet.fee_minor,
            "payment_intent_id": packet.payment_intent_id,
            "idempotency_key": packet.fee_idempotency_key,
        },
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
