"""The durable trigger queue. Every SQL statement of the queue is in this module.

States and moves (the only ones; every statement below names the move it makes):

    available --claim--> claimed --launch--> launched
    claimed | launched --ack--> done
    claimed | launched --fail(retryable, attempts left)--> available (after backoff)
    claimed | launched --fail(permanent, or no attempts left)--> dead
    claimed (lease expired) --reap--> available, or dead when no attempts are left
    launched (its run is gone from Dagster) --release_lost--> available, or dead when no attempts are left
    available | claimed | launched --cancel--> cancelled
    dead --requeue--> available (attempts start again)
    available | dead --complete_by_run--> done (a re-execution from the UI fulfilled the trigger)
    done | cancelled --prune--> (deleted)

A claim gives each row a fresh claim token; ack, fail, extend and launch need it, so a worker that lost
its lease (the row was reaped and claimed again) cannot complete the row. Attempts are counted at claim;
the token, not the attempt count (which requeue resets), names a claim's run (see sensors/queue.py).
A `launched` row is reconciled with its run's status (sensors/queue.py `reconcile_launched`), so a lost
run-status reaction never leaves it launched.
Dedup is the partial unique index over live rows (`uq_trigger_queue_live_dedup_key`), never a
read-then-write. Partial indexes cover the live states, so claims stay fast however many finished rows
the table holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, and_, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain import backoff as backoff_formula
from domain.models import QUEUE_LIVE_STATES, QueueState, TriggerQueue
from domain.triggers import KINDS, KindPolicy

Q: Table = TriggerQueue.__table__  # type: ignore[assignment]
S = QueueState
LIVE = [s.value for s in QUEUE_LIVE_STATES]
HELD = [S.CLAIMED.value, S.LAUNCHED.value]
LIVE_DEDUP_PREDICATE = "dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"


class QueueError(Exception):
    pass


class InvalidTrigger(QueueError, ValueError):
    """An unknown kind or a payload its model refuses; `errors` names the fields."""

    def __init__(self, message: str, errors: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.errors = errors


class DedupConflict(QueueError):
    """The dedup key is held by a live trigger with a different payload."""

    def __init__(self, kind: str, dedup_key: str, existing_id: int) -> None:
        super().__init__(f"{kind} trigger {dedup_key!r} is pending (id {existing_id}) with a different payload")
        self.existing_id = existing_id


class StaleClaim(QueueError):
    """The row is no longer held by this claim token (reaped, claimed again, or finished)."""


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    tenant_id: str | None
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    claim_token: str


def now_utc() -> datetime:
    return datetime.now(UTC)


def _now(session: Session) -> datetime:
    """The time, read once the transaction has begun: on SQLite that is once the write lock is held, so
    a writer that waited for the lock does not stamp rows with the time it started waiting."""
    session.connection()
    return now_utc()


def policy(kind: str) -> KindPolicy:
    try:
        return KINDS[kind]
    except KeyError:
        raise InvalidTrigger(f"unknown trigger kind {kind!r}", [{"field": "kind", "message": "unknown kind"}]) from None


def validate(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    try:
        model = policy(kind).payload.model_validate(payload)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "payload", "message": e["msg"]} for e in exc.errors()]
        raise InvalidTrigger(f"invalid {kind} payload: {', '.join(e['field'] for e in errors)}", errors) from None
    return model.model_dump(mode="json")


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _token_sql(session: Session) -> Any:
    # A fresh token per row, made by the database in the claiming statement itself.
    if _is_pg(session):
        return func.gen_random_uuid().cast(Q.c.claim_token.type)
    return func.lower(func.hex(func.randomblob(16)))


# -- enqueue -------------------------------------------------------------------------------------------


def enqueue(
    session: Session,
    kind: str,
    tenant_id: str | None,
    payload: Mapping[str, Any],
    dedup_key: str | None = None,
    available_at: datetime | None = None,
) -> int:
    """Add a trigger in the caller's transaction; returns its id. A live trigger with the same dedup key
    and payload is returned instead; with another payload, DedupConflict."""
    kind_policy = policy(kind)
    body = validate(kind, payload)
    if kind_policy.tenant_scoped and not tenant_id:
        raise InvalidTrigger(f"{kind} triggers need a tenant", [{"field": "tenant_id", "message": "required"}])
    now = _now(session)
    values = {
        "kind": kind,
        "tenant_id": tenant_id,
        "payload": body,
        "dedup_key": dedup_key,
        "state": S.AVAILABLE.value,
        "attempts": 0,
        "max_attempts": kind_policy.max_attempts,
        "available_at": available_at or now,
        "created_at": now,
        "updated_at": now,
    }
    if dedup_key is None:
        return int(session.execute(Q.insert().values(**values).returning(Q.c.id)).scalar_one())
    insert = pg_insert if _is_pg(session) else sqlite_insert
    statement = (
        insert(Q)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=["kind", "dedup_key"],
            # Literal, not bound: with server-side prepared statements (psycopg after 5 uses) a bound
            # predicate no longer matches the partial index and PostgreSQL refuses the ON CONFLICT.
            index_where=text(LIVE_DEDUP_PREDICATE),
        )
        .returning(Q.c.id)
    )
    for _ in range(5):
        new_id = session.execute(statement).scalar_one_or_none()
        if new_id is not None:
            return int(new_id)
        existing = session.execute(
            select(Q.c.id, Q.c.payload, Q.c.tenant_id).where(
                Q.c.kind == kind, Q.c.dedup_key == dedup_key, Q.c.state.in_(LIVE)
            )
        ).one_or_none()
        if existing is None:
            continue  # it finished between the two statements: insert again
        if existing.payload != body or existing.tenant_id != tenant_id:
            raise DedupConflict(kind, dedup_key, existing.id)
        return int(existing.id)
    raise QueueError(f"could not enqueue {kind} {dedup_key!r}: the key kept changing hands")


# -- claim, launch, extend -----------------------------------------------------------------------------


def claim(session: Session, kinds: Sequence[str], limit: int, lease_seconds: float, worker: str) -> list[Claimed]:
    """available -> claimed, for up to `limit` due rows of `kinds`, oldest first."""
    now = _now(session)
    pick = (
        select(Q.c.id)
        .where(Q.c.state == S.AVAILABLE.value, Q.c.kind.in_(list(kinds)), Q.c.available_at <= now)
        .order_by(Q.c.available_at, Q.c.id)
        .limit(limit)
    )
    changes = {
        "state": S.CLAIMED.value,
        "attempts": Q.c.attempts + 1,
        "claim_token": _token_sql(session),
        "claimed_at": now,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "worker": worker,
        "updated_at": now,
    }
    returning = (Q.c.id, Q.c.kind, Q.c.tenant_id, Q.c.payload, Q.c.attempts, Q.c.max_attempts, Q.c.claim_token)
    if _is_pg(session):
        picked = pick.with_for_update(skip_locked=True).cte("picked")
        statement = update(Q).where(Q.c.id == picked.c.id).values(**changes).returning(*returning)
    else:
        # SQLite: the engine begins every transaction IMMEDIATE, so this runs under the write lock.
        statement = update(Q).where(Q.c.id.in_(pick.scalar_subquery())).values(**changes).returning(*returning)
    rows = session.execute(statement).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


def _held(row_id: int, token: str, states: Sequence[str] = HELD) -> Any:
    return and_(Q.c.id == row_id, Q.c.claim_token == token, Q.c.state.in_(list(states)))


def launch(session: Session, row_id: int, token: str, run_id: str) -> None:
    """claimed -> launched: a Dagster run now carries the row; its run-status sensor will ack or fail it."""
    result = session.execute(
        update(Q)
        .where(_held(row_id, token, [S.CLAIMED.value]))
        .values(state=S.LAUNCHED.value, run_id=run_id, lease_expires_at=None, updated_at=now_utc())
        .returning(Q.c.id)
    )
    if result.scalar_one_or_none() is None:
        raise StaleClaim(f"trigger {row_id} is not claimed by this token")


def extend(session: Session, row_id: int, token: str, lease_seconds: float) -> datetime:
    """Renew a claim's lease."""
    expires = _now(session) + timedelta(seconds=lease_seconds)
    result = session.execute(
        update(Q)
        .where(_held(row_id, token, [S.CLAIMED.value]))
        .values(lease_expires_at=expires, updated_at=now_utc())
        .returning(Q.c.id)
    )
    if result.scalar_one_or_none() is None:
        raise StaleClaim(f"trigger {row_id} is not claimed by this token")
    return expires


# -- ack, fail -----------------------------------------------------------------------------------------


def ack_many(session: Session, held: Iterable[tuple[int, str]], run_id: str | None = None) -> set[int]:
    """claimed | launched -> done, for each (id, token) still held; returns the ids acked. `run_id`
    names the run that did it (the run of this claim: it carries the claim's token)."""
    pairs = list(held)
    if not pairs:
        return set()
    now = _now(session)
    match = tuple_(Q.c.id, Q.c.claim_token).in_(pairs)
    changes: dict[str, Any] = {
        "state": S.DONE.value,
        "claim_token": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }
    if run_id is not None:
        changes["run_id"] = run_id
    result = session.execute(update(Q).where(match, Q.c.state.in_(HELD)).values(**changes).returning(Q.c.id))
    return {int(r) for r in result.scalars()}


def ack(session: Session, row_id: int, token: str) -> None:
    if row_id not in ack_many(session, [(row_id, token)]):
        raise StaleClaim(f"trigger {row_id} is not held by this token")


def backoff(kind_policy: KindPolicy, attempts: int) -> timedelta:
    """The kind's wait after `attempts` attempts: the one formula (domain/backoff.py)."""
    return timedelta(
        seconds=backoff_formula.backoff_seconds(attempts, kind_policy.backoff_base_s, kind_policy.backoff_max_s)
    )


def fail(
    session: Session, row_id: int, token: str, error: str, retryable: bool = True, run_id: str | None = None
) -> QueueState:
    """claimed | launched -> available (retry after backoff) or dead. Returns the new state. `run_id`, the
    run that failed, is recorded: its launch may not have been recorded yet when a run fails fast."""
    row = session.execute(
        select(Q.c.kind, Q.c.attempts, Q.c.max_attempts).where(_held(row_id, token)).with_for_update()
    ).one_or_none()
    if row is None:
        raise StaleClaim(f"trigger {row_id} is not held by this token")
    now = _now(session)
    retry = retryable and row.attempts < row.max_attempts
    changes: dict[str, Any] = {
        "claim_token": None,
        "lease_expires_at": None,
        "last_error": error[:4000],
        "updated_at": now,
    }
    if run_id is not None:
        changes["run_id"] = run_id
    if retry:
        changes |= {"state": S.AVAILABLE.value, "available_at": now + backoff(policy(row.kind), row.attempts)}
    else:
        changes |= {"state": S.DEAD.value, "finished_at": now}
    session.execute(update(Q).where(_held(row_id, token)).values(**changes))
    return S.AVAILABLE if retry else S.DEAD


# -- sweeping ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaped:
    id: int
    kind: str
    tenant_id: str | None
    state: QueueState  # available again, or dead


def reap(session: Session, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[Reaped]:
    """claimed rows whose lease expired -> available (attempts left) or dead. Each counts as an attempt."""
    now = _now(session)
    expired = Q.c.state == S.CLAIMED.value
    filters = [expired, Q.c.lease_expires_at < now]
    if kinds is not None:
        filters.append(Q.c.kind.in_(list(kinds)))
    pick = select(Q.c.id).where(*filters).order_by(Q.c.lease_expires_at).limit(limit)
    if _is_pg(session):
        pick = pick.with_for_update(skip_locked=True)
    ids = list(session.scalars(pick))
    if not ids:
        return []
    common = {"claim_token": None, "lease_expires_at": None, "updated_at": now, "last_error": "lease expired"}
    # A rescued row keeps its `available_at`, so it goes back to the head of the queue, not the tail.
    revived = session.execute(
        update(Q)
        .where(Q.c.id.in_(ids), expired, Q.c.attempts < Q.c.max_attempts)
        .values(state=S.AVAILABLE.value, **common)
        .returning(Q.c.id, Q.c.kind, Q.c.tenant_id)
    ).all()
    died = session.execute(
        update(Q)
        .where(Q.c.id.in_(ids), expired)
        .values(state=S.DEAD.value, finished_at=now, **common)
        .returning(Q.c.id, Q.c.kind, Q.c.tenant_id)
    ).all()
    return [Reaped(r.id, r.kind, r.tenant_id, S.AVAILABLE) for r in revived] + [
        Reaped(r.id, r.kind, r.tenant_id, S.DEAD) for r in died
    ]


@dataclass(frozen=True)
class Launched:
    id: int
    kind: str
    tenant_id: str | None
    claim_token: str
    run_id: str
    attempts: int
    max_attempts: int


def launched(session: Session, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[Launched]:
    """launched rows, oldest launch first: the ones to reconcile with their runs."""
    filters = [Q.c.state == S.LAUNCHED.value]
    if kinds is not None:
        filters.append(Q.c.kind.in_(list(kinds)))
    rows = session.execute(
        select(Q.c.id, Q.c.kind, Q.c.tenant_id, Q.c.claim_token, Q.c.run_id, Q.c.attempts, Q.c.max_attempts)
        .where(*filters)
        .order_by(Q.c.updated_at, Q.c.id)
        .limit(limit)
    ).all()
    return [Launched(*row) for row in rows]


def release_lost(session: Session, row_id: int, token: str, error: str) -> QueueState | None:
    """launched -> available (attempts left) or dead, when the row's run no longer exists in Dagster (it
    was deleted): like an expired claim, it counts as an attempt. None when the token no longer holds."""
    now = _now(session)
    held = _held(row_id, token, [S.LAUNCHED.value])
    common = {"claim_token": None, "lease_expires_at": None, "updated_at": now, "last_error": error[:4000]}
    revived = session.execute(
        update(Q)
        .where(held, Q.c.attempts < Q.c.max_attempts)
        .values(state=S.AVAILABLE.value, **common)
        .returning(Q.c.id)
    ).scalar_one_or_none()
    if revived is not None:
        return S.AVAILABLE
    died = session.execute(
        update(Q).where(held).values(state=S.DEAD.value, finished_at=now, **common).returning(Q.c.id)
    ).scalar_one_or_none()
    return S.DEAD if died is not None else None


def prune(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete done and cancelled rows finished before `older_than` ago (dead rows stay for requeue)."""
    cutoff = _now(session) - older_than
    ids = select(Q.c.id).where(Q.c.state.in_([S.DONE.value, S.CANCELLED.value]), Q.c.finished_at < cutoff).limit(limit)
    result = session.execute(delete(Q).where(Q.c.id.in_(ids.scalar_subquery())).returning(Q.c.id))
    return len(result.all())


def cancel(session: Session, row_id: int, token: str | None = None) -> bool:
    """available | claimed | launched -> cancelled; with `token`, only while that claim holds the row."""
    now = _now(session)
    where = _held(row_id, token) if token is not None else and_(Q.c.id == row_id, Q.c.state.in_(LIVE))
    result = session.execute(
        update(Q)
        .where(where)
        .values(state=S.CANCELLED.value, claim_token=None, lease_expires_at=None, finished_at=now, updated_at=now)
        .returning(Q.c.id)
    )
    return result.scalar_one_or_none() is not None


def complete_by_run(session: Session, row_id: int, run_id: str) -> bool:
    """available | dead -> done, when a run outside the queue's own attempts (a re-execution launched
    from the Dagster UI) fulfilled the trigger. A row held by a newer claim is left to that claim."""
    now = _now(session)
    result = session.execute(
        update(Q)
        .where(Q.c.id == row_id, Q.c.state.in_([S.AVAILABLE.value, S.DEAD.value]))
        .values(state=S.DONE.value, run_id=run_id, finished_at=now, updated_at=now)
        .returning(Q.c.id)
    )
    return result.scalar_one_or_none() is not None


def requeue(session: Session, row_id: int) -> bool:
    """dead -> available, attempts from zero. False when the row is not dead (or its dedup key is live)."""
    now = _now(session)
    twin = Q.alias("twin")
    live_twin = (
        select(twin.c.id)
        .where(twin.c.kind == Q.c.kind, twin.c.dedup_key == Q.c.dedup_key, twin.c.state.in_(LIVE))
        .exists()
    )
    result = session.execute(
        update(Q)
        .where(Q.c.id == row_id, Q.c.state == S.DEAD.value, ~live_twin)
        .values(state=S.AVAILABLE.value, attempts=0, available_at=now, finished_at=None, updated_at=now)
        .returning(Q.c.id)
    )
    return result.scalar_one_or_none() is not None


# -- reading -------------------------------------------------------------------------------------------


def held_by_kind(session: Session, kind: str, state: QueueState, limit: int = 500) -> list[Any]:
    return list(
        session.execute(
            select(Q.c.id, Q.c.attempts, Q.c.claim_token, Q.c.lease_expires_at, Q.c.run_id)
            .where(Q.c.kind == kind, Q.c.state == state.value)
            .order_by(Q.c.id)
            .limit(limit)
        ).all()
    )


def live_id(session: Session, kind: str, dedup_key: str) -> int | None:
    """The id of the live trigger holding `dedup_key` for `kind`, if any (what a redelivery is told)."""
    return session.scalars(
        select(Q.c.id).where(Q.c.kind == kind, Q.c.dedup_key == dedup_key, Q.c.state.in_(LIVE))
    ).first()


def stats(session: Session, tenant_ids: Iterable[str] | None = None, tenantless: bool = True) -> dict[str, Any]:
    """Rows per kind and state, with the age of the oldest available row and of the oldest launched row
    (since its launch) per kind: a launched row that grows old is a run nobody reconciled. With
    `tenant_ids`, only those tenants' rows, plus the rows of no tenant when `tenantless`."""
    now = _now(session)
    scope = []
    if tenant_ids is not None:
        owned = Q.c.tenant_id.in_(list(tenant_ids))
        scope.append(or_(owned, Q.c.tenant_id.is_(None)) if tenantless else owned)
    counts = session.execute(
        select(Q.c.kind, Q.c.state, func.count()).where(*scope).group_by(Q.c.kind, Q.c.state)
    ).all()
    oldest = session.execute(
        select(Q.c.kind, func.min(Q.c.available_at)).where(Q.c.state == S.AVAILABLE.value, *scope).group_by(Q.c.kind)
    ).all()
    # A launched row's updated_at is its launch time: nothing else writes a launched row.
    oldest_launched = session.execute(
        select(Q.c.kind, func.min(Q.c.updated_at)).where(Q.c.state == S.LAUNCHED.value, *scope).group_by(Q.c.kind)
    ).all()
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({*KINDS, *(row[0] for row in counts)}):
        kinds[kind] = {
            "states": {s.value: 0 for s in QueueState},
            "oldest_available_age_s": None,
            "oldest_launched_age_s": None,
        }
    for kind, state, count in counts:
        kinds[kind]["states"][state] = int(count)
    for field, rows in (("oldest_available_age_s", oldest), ("oldest_launched_age_s", oldest_launched)):
        for kind, since in rows:
            if since is not None:
                if since.tzinfo is None:
                    since = since.replace(tzinfo=UTC)
                kinds[kind][field] = round(max((now - since).total_seconds(), 0.0), 3)
    return {"kinds": kinds, "at": now.isoformat()}
