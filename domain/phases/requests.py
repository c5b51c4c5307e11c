"""What a phase trigger is and how one is accepted: the phases, what callers send for each, the trigger's
dedup key, and queueing many posts at once (the API's group commit); a phase completed already is its trigger."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import bindparam, text

from domain.core.models import (
    JSONType,
    utcnow,
)
from domain.phases.phases_money import (
    CURRENCIES,
    exponent,
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
