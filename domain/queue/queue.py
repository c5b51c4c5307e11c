"""The durable trigger queue. Every SQL statement of the queue is in this package: the hot paths' in
domain/queue/statements.py, the others here and in domain/queue/reading.py.

States and moves (the only ones; every statement below names the move it makes):

    available --claim--> claimed --launch--> launched (again by the same run: idempotent, still held)
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
the token, not the attempt count (which requeue resets), names a claim's run (see
orchestration_defs/trigger_runs.py). A `launched` row is reconciled with its run's status (`reconcile_launched`
there), so a lost run-status reaction never leaves it launched.
Dedup is the partial unique index over live rows (`uq_trigger_queue_live_dedup_key`), never a
read-then-write. Partial indexes cover the live states, so claims stay fast however many finished rows
the table holds.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from pydantic import ValidationError
from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from domain.core import backoff as backoff_formula, counters
from domain.core.errors import UnknownTenant
from domain.core.models import QueueState
from domain.core.store import is_postgres
from domain.queue.reading import (
    Trigger as Trigger,
    due as due,
    find as find,
    held_by_kind as held_by_kind,
    live_id as live_id,
    queued_since as queued_since,
    stats as stats,
)
from domain.queue.statements import (
    ACK_AND_CLAIM_KINDS_SQL,
    ACK_AND_CLAIM_ONE_KIND_SQL,
    ACK_SQL,
    CLAIM_KINDS_SQL,
    CLAIM_LAUNCHED_KINDS_SQL,
    CLAIM_LAUNCHED_ONE_KIND_SQL,
    CLAIM_ONE_KIND_SQL,
    DIE_SQL,
    ENQUEUE_DEDUP_SQL,
    ENQUEUE_KEYED_SQL,
    ENQUEUE_SQL,
    HELD,
    HELD_BY_RUN_SQL,
    HELD_ROW_SQL,
    LAUNCH_SQL,
    LIVE as LIVE,
    LIVE_TWIN_SQL,
    LIVE_TWINS_SQL,
    RETRY_SQL,
    Driver,
    Q as Q,
    S,
    Store as Store,
    json_param,
    json_value,
    now_in,
    now_utc as now_utc,
)
from domain.queue.triggers import KINDS, KindPolicy


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


# -- enqueue -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyed:
    """A trigger with a dedup key, for enqueue_keyed."""

    tenant_id: str | None
    payload: Mapping[str, Any]
    dedup_key: str


def enqueue(
    session: Store,
    kind: str,
    tenant_id: str | None,
    payload: Mapping[str, Any],
    dedup_key: str | None = None,
    available_at: datetime | None = None,
) -> int:
    """Add a trigger in the caller's transaction; returns its id. A live trigger with the same dedup key
    and payload is returned instead; with another payload, DedupConflict. Each statement is safe alone
    (the insert is the only write), so an autocommit connection (store.autocommit) will do."""
    if dedup_key is not None:
        outcome = enqueue_keyed(session, kind, [Keyed(tenant_id, payload, dedup_key)], available_at)[0]
        if isinstance(outcome, QueueError):
            raise outcome
        return outcome
    kind_policy = policy(kind)
    body = _checked(kind, kind_policy, tenant_id, payload)
    db = Driver(session)
    now = db.now()
    values = {
        "kind": kind,
        "tenant_id": tenant_id,
        "payload": json_param(db, body),
        "dedup_key": None,
        "max_attempts": kind_policy.max_attempts,
        "available_at": available_at or now,
        "now": now,
    }
    return int(db.rows(ENQUEUE_SQL, values)[0][0])


def enqueue_keyed(
    session: Store, kind: str, triggers: Sequence[Keyed], available_at: datetime | None = None
) -> list[int | QueueError]:
    """Many triggers of one kind, each with a dedup key, as enqueue would add them one by one, in one
    statement (the API gathers concurrent requests' triggers into one commit). Each trigger has its own
    outcome, in order: its id (new, or the live trigger's that holds its key with the same payload and
    tenant), or the QueueError that it met (InvalidTrigger, DedupConflict). Meant for an autocommit
    connection (store.autocommit; each statement stands alone): rows are inserted in key order, so two
    batches sharing keys never wait on each other in a cycle; inside a longer transaction they could."""
    kind_policy = policy(kind)
    bodies: dict[int, dict[str, Any]] = {}
    outcomes: list[int | QueueError | None] = [None] * len(triggers)
    first: dict[str, int] = {}  # a key's first valid trigger: the one inserted; later ones are its repeats
    for n, trigger in enumerate(triggers):
        try:
            bodies[n] = _checked(kind, kind_policy, trigger.tenant_id, trigger.payload)
        except InvalidTrigger as exc:
            outcomes[n] = exc
            continue
        first.setdefault(trigger.dedup_key, n)
    db = Driver(session)
    now = db.now()
    holders: dict[str, tuple[int, dict[str, Any], str | None]] = {}  # the live row of each key placed
    unplaced = dict(first)
    for _ in range(5):
        if not unplaced:
            break
        rows = [(triggers[n].tenant_id, bodies[n], key) for key, n in sorted(unplaced.items())]
        inserted = _insert_keyed_known(db, kind, kind_policy, rows, available_at or now, now)
        twins = _live_twins(db, kind, [key for key in unplaced if key not in inserted])
        for key, n in list(unplaced.items()):
            if key in inserted:
                holders[key] = (inserted[key], bodies[n], triggers[n].tenant_id)
            elif key in twins:  # a live trigger held the key already
                twin_id, twin_payload, twin_tenant = twins[key]
                holders[key] = (twin_id, json_value(twin_payload), twin_tenant)
            else:
                continue  # it finished between the two statements: insert again
            del unplaced[key]
    for n, body in bodies.items():
        key, tenant_id = triggers[n].dedup_key, triggers[n].tenant_id
        if key not in holders:
            outcomes[n] = QueueError(f"could not enqueue {kind} {key!r}: the key kept changing hands")
            continue
        held_id, held_body, held_tenant = holders[key]
        same = body == held_body and tenant_id == held_tenant
        outcomes[n] = held_id if same else DedupConflict(kind, key, held_id)
    return [outcome for outcome in outcomes if outcome is not None]  # every trigger has its outcome by now


def _checked(kind: str, kind_policy: KindPolicy, tenant_id: str | None, payload: Mapping[str, Any]) -> dict[str, Any]:
    body = validate(kind, payload)
    if kind_policy.tenant_scoped and not tenant_id:
        raise InvalidTrigger(f"{kind} triggers need a tenant", [{"field": "tenant_id", "message": "required"}])
    return body


def _insert_keyed_known(
    db: Driver,
    kind: str,
    kind_policy: KindPolicy,
    rows: list[tuple[str | None, dict[str, Any], str]],
    available_at: datetime,
    now: datetime,
) -> dict[str, int]:
    """_insert_keyed, with the store's refusal of an unknown tenant (the rows' only reference) said as
    UnknownTenant: the driver's foreign-key violation stays below the domain."""
    try:
        return _insert_keyed(db, kind, kind_policy, rows, available_at, now)
    except (psycopg.errors.ForeignKeyViolation, sqlite3.IntegrityError) as exc:
        if isinstance(exc, sqlite3.IntegrityError) and "FOREIGN KEY" not in str(exc):
            raise
        raise UnknownTenant(", ".join(sorted({str(tenant) for tenant, _, _ in rows}))) from exc


def _insert_keyed(
    db: Driver,
    kind: str,
    kind_policy: KindPolicy,
    rows: list[tuple[str | None, dict[str, Any], str]],
    available_at: datetime,
    now: datetime,
) -> dict[str, int]:
    """Insert the (tenant_id, payload, dedup_key) rows whose key no live trigger holds; their ids by key."""
    common = {"kind": kind, "max_attempts": kind_policy.max_attempts, "available_at": available_at, "now": now}
    if db.pg and len(rows) > 1:
        params = {
            **common,
            "tenant_ids": [tenant for tenant, _, _ in rows],
            "payloads": [json.dumps(body) for _, body, _ in rows],
            "keys": [key for _, _, key in rows],
        }
        return {key: int(row_id) for key, row_id, _ in db.raw.execute(ENQUEUE_KEYED_SQL, params, prepare=True)}
    inserted = {}
    for tenant, body, key in rows:
        values = {**common, "tenant_id": tenant, "payload": json_param(db, body), "dedup_key": key}
        for row_id, _ in db.rows(ENQUEUE_DEDUP_SQL, values):
            inserted[key] = int(row_id)
    return inserted


def _live_twins(db: Driver, kind: str, keys: list[str]) -> dict[str, tuple[int, Any, str | None]]:
    """The live triggers holding `keys`: (id, payload, tenant_id) by key."""
    if not keys:
        return {}
    if db.pg and len(keys) > 1:
        found = db.raw.execute(LIVE_TWINS_SQL, {"kind": kind, "keys": keys}, prepare=True)
        return {key: (int(row_id), payload, tenant) for key, row_id, payload, tenant in found}
    twins = {}
    for key in keys:
        for row_id, payload, tenant in db.rows(LIVE_TWIN_SQL, {"kind": kind, "dedup_key": key}):
            twins[key] = (int(row_id), payload, tenant)
    return twins


# -- claim, launch, extend -----------------------------------------------------------------------------


def claim(
    session: Store, kinds: Sequence[str], limit: int, lease_seconds: float, worker: str, run_id: str | None = None
) -> list[Claimed]:
    """available -> claimed, for up to `limit` due rows of `kinds`, oldest first: one statement. With
    `run_id` (a run claiming for itself): available -> launched by that run at once, as `launch` would."""
    return _claim(Driver(session), kinds, limit, lease_seconds, worker, run_id)


def _claim(
    db: Driver, kinds: Sequence[str], limit: int, lease_seconds: float, worker: str, run_id: str | None = None
) -> list[Claimed]:
    now = db.now()
    params: dict[str, Any] = {
        "now": now,
        "expires": now + timedelta(seconds=lease_seconds),
        "worker": worker,
        "limit": limit,
        "run_id": run_id,
    }
    kinds = list(kinds)
    one_kind, several = (
        (CLAIM_LAUNCHED_ONE_KIND_SQL, CLAIM_LAUNCHED_KINDS_SQL) if run_id else (CLAIM_ONE_KIND_SQL, CLAIM_KINDS_SQL)
    )
    if len(kinds) == 1:
        sql, params["kind"] = one_kind, kinds[0]
    else:
        sql, params["kinds"] = several, kinds if db.pg else json.dumps(kinds)
    rows = db.rows(sql, params)
    return sorted((Claimed(r[0], r[1], r[2], json_value(r[3]), r[4], r[5], r[6]) for r in rows), key=lambda c: c.id)


def _held(row_id: int, token: str, states: Sequence[str] = HELD) -> Any:
    return and_(Q.c.id == row_id, Q.c.claim_token == token, Q.c.state.in_(list(states)))


def launch(session: Store, row_id: int, token: str, run_id: str) -> None:
    """claimed -> launched: a Dagster run now carries the row; its run-status sensor will ack or fail it.
    A row already launched by `run_id` with this token is held by that run: nothing changes (a step of
    the run delivered again launches its rows again)."""
    db = Driver(session)
    if not db.rows(LAUNCH_SQL, {"id": row_id, "token": token, "run_id": run_id, "now": db.now()}):
        raise StaleClaim(f"trigger {row_id} is not claimed by this token")


def held_by_run(session: Store, kind: str, run_id: str) -> list[Claimed]:
    """The `kind` rows `run_id` holds (launched with its id), by id: one statement."""
    db = Driver(session)
    rows = db.rows(HELD_BY_RUN_SQL, {"kind": kind, "run_id": run_id})
    return [Claimed(r[0], r[1], r[2], json_value(r[3]), r[4], r[5], r[6]) for r in rows]


def extend(session: Session, row_id: int, token: str, lease_seconds: float) -> datetime:
    """Renew a claim's lease."""
    expires = now_in(session) + timedelta(seconds=lease_seconds)
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


def ack_many(session: Store, held: Iterable[tuple[int, str]], run_id: str | None = None) -> set[int]:
    """claimed | launched -> done, for each (id, token) still held: one statement; returns the ids acked.
    `run_id` names the run that did it (the run of this claim: it carries the claim's token)."""
    return _ack(Driver(session), list(held), run_id)


def _ack(db: Driver, pairs: list[tuple[int, str]], run_id: str | None) -> set[int]:
    if not pairs:
        return set()
    params: dict[str, Any] = {"now": db.now(), "run_id": run_id}
    if db.pg:
        params["ids"], params["tokens"] = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        params["held"] = json.dumps(pairs)
    return {int(r[0]) for r in db.rows(ACK_SQL, params)}


def ack_and_claim(
    session: Store,
    held: Iterable[tuple[int, str]],
    kinds: Sequence[str],
    limit: int,
    lease_seconds: float,
    worker: str,
    run_id: str | None = None,
) -> tuple[set[int], list[Claimed]]:
    """A worker's loop step in one transaction (one commit): ack the batch it finished (as ack_many) and
    claim the next (as claim). Returns the ids acked and the new claims. On PostgreSQL both are one
    statement; on SQLite two, under the one write lock the transaction took at BEGIN IMMEDIATE.

    On PostgreSQL this commit does not wait for its WAL flush (`synchronous_commit = off` for this
    transaction only; a quarter of the loop's time was that fsync). A crash of the database within the
    next ~0.6 s (3 x wal_writer_delay) can forget the ack and the claim, never more: the acked rows come
    back as held and are re-run after their lease, the claimed ones come back available. A trigger is
    never lost (enqueue keeps waiting for its flush); a batch can run twice, as after a worker's crash."""
    db = Driver(session)
    pairs = list(held)
    if not db.pg or not pairs:
        return _ack(db, pairs, run_id), _claim(db, kinds, limit, lease_seconds, worker)
    now = db.now()
    params: dict[str, Any] = {
        "now": now,
        "expires": now + timedelta(seconds=lease_seconds),
        "worker": worker,
        "limit": limit,
        "run_id": run_id,
        "ids": [p[0] for p in pairs],
        "tokens": [p[1] for p in pairs],
    }
    kinds = list(kinds)
    if len(kinds) == 1:
        sql, params["kind"] = ACK_AND_CLAIM_ONE_KIND_SQL, kinds[0]
    else:
        sql, params["kinds"] = ACK_AND_CLAIM_KINDS_SQL, kinds
    db.raw.execute("SET LOCAL synchronous_commit = off")
    rows = db.raw.execute(sql, params, prepare=True).fetchall()
    acked = {int(r[1]) for r in rows if r[0]}
    claimed = sorted((Claimed(*r[1:]) for r in rows if not r[0]), key=lambda c: c.id)
    return acked, claimed


def ack(session: Store, row_id: int, token: str) -> None:
    if row_id not in ack_many(session, [(row_id, token)]):
        raise StaleClaim(f"trigger {row_id} is not held by this token")


def backoff(kind_policy: KindPolicy, attempts: int) -> timedelta:
    """The kind's wait after `attempts` attempts: the one formula (domain/core/backoff.py)."""
    return timedelta(
        seconds=backoff_formula.backoff_seconds(attempts, kind_policy.backoff_base_s, kind_policy.backoff_max_s)
    )


def fail(
    session: Store, row_id: int, token: str, error: str, retryable: bool = True, run_id: str | None = None
) -> QueueState:
    """claimed | launched -> available (retry after backoff) or dead. Returns the new state. `run_id`, the
    run that failed, is recorded: its launch may not have been recorded yet when a run fails fast."""
    db = Driver(session)
    held = {"id": row_id, "token": token}
    row = db.rows(HELD_ROW_SQL, held)  # locks the row on PostgreSQL; SQLite holds the write lock
    if not row:
        raise StaleClaim(f"trigger {row_id} is not held by this token")
    kind, attempts, max_attempts = row[0]
    now = db.now()
    params = held | {"error": error[:4000], "now": now, "run_id": run_id}
    if retryable and attempts < max_attempts:
        db.run(RETRY_SQL, params | {"available_at": now + backoff(policy(kind), attempts)})
        return S.AVAILABLE
    db.run(DIE_SQL, params)
    counters.count(session, "triggers_dead", {"kind": kind})
    return S.DEAD


# -- sweeping ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaped:
    id: int
    kind: str
    tenant_id: str | None
    state: QueueState  # available again, or dead


def reap(session: Session, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[Reaped]:
    """claimed rows whose lease expired -> available (attempts left) or dead. Each counts as an attempt."""
    now = now_in(session)
    expired = Q.c.state == S.CLAIMED.value
    filters = [expired, Q.c.lease_expires_at < now]
    if kinds is not None:
        filters.append(Q.c.kind.in_(list(kinds)))
    pick = select(Q.c.id).where(*filters).order_by(Q.c.lease_expires_at).limit(limit)
    if is_postgres(session):
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
    for kind, n in Counter(r.kind for r in died).items():
        counters.count(session, "triggers_dead", {"kind": kind}, by=n)
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
    launched_at: datetime  # UTC; a launched row's updated_at is its launch time (nothing else writes one)

    def __post_init__(self) -> None:
        if self.launched_at.tzinfo is None:  # SQLite gives naive UTC back
            object.__setattr__(self, "launched_at", self.launched_at.replace(tzinfo=UTC))


def launched(session: Session, kinds: Sequence[str] | None = None, limit: int = 1000) -> list[Launched]:
    """launched rows, oldest launch first: the ones to reconcile with their runs."""
    filters = [Q.c.state == S.LAUNCHED.value]
    if kinds is not None:
        filters.append(Q.c.kind.in_(list(kinds)))
    rows = session.execute(
        select(
            Q.c.id, Q.c.kind, Q.c.tenant_id, Q.c.claim_token, Q.c.run_id, Q.c.attempts, Q.c.max_attempts, Q.c.updated_at
        )
        .where(*filters)
        .order_by(Q.c.updated_at, Q.c.id)
        .limit(limit)
    ).all()
    return [Launched(*row) for row in rows]


def release_lost(session: Session, row_id: int, token: str, error: str) -> QueueState | None:
    """launched -> available (attempts left) or dead, when the row's run no longer exists in Dagster (it
    was deleted): like an expired claim, it counts as an attempt. None when the token no longer holds."""
    now = now_in(session)
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
        update(Q).where(held).values(state=S.DEAD.value, finished_at=now, **common).returning(Q.c.kind)
    ).scalar_one_or_none()
    if died is None:
        return None
    counters.count(session, "triggers_dead", {"kind": died})
    return S.DEAD


def prune(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete done and cancelled rows finished before `older_than` ago (dead rows stay for requeue)."""
    cutoff = now_in(session) - older_than
    ids = select(Q.c.id).where(Q.c.state.in_([S.DONE.value, S.CANCELLED.value]), Q.c.finished_at < cutoff).limit(limit)
    result = session.execute(delete(Q).where(Q.c.id.in_(ids.scalar_subquery())).returning(Q.c.id))
    return len(result.all())


def cancel(session: Session, row_id: int, token: str | None = None) -> bool:
    """available | claimed | launched -> cancelled; with `token`, only while that claim holds the row."""
    now = now_in(session)
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
    now = now_in(session)
    result = session.execute(
        update(Q)
        .where(Q.c.id == row_id, Q.c.state.in_([S.AVAILABLE.value, S.DEAD.value]))
        .values(state=S.DONE.value, run_id=run_id, finished_at=now, updated_at=now)
        .returning(Q.c.id)
    )
    return result.scalar_one_or_none() is not None


def requeue(session: Session, row_id: int) -> bool:
    """dead -> available, attempts from zero. False when the row is not dead (or its dedup key is live)."""
    now = now_in(session)
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
