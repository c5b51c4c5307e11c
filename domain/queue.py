"""The durable trigger queue. Every SQL statement of the queue is in this module.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb
from pydantic import ValidationError
from sqlalchemy import Connection, Table, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from domain import backoff as backoff_formula
from domain.models import QUEUE_LIVE_STATES, QueueState, TriggerQueue
from domain.store import is_postgres
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


# -- the hot paths: driver SQL ---------------------------------------------------------------------------
#
# enqueue, claim, launch, ack and fail run as plain SQL on the driver's connection (psycopg 3 or sqlite3),
# inside the caller's transaction: no ORM, no statement compilation, one round trip per statement. On
# PostgreSQL every statement is prepared server-side on first use (one fixed text per statement: lists
# travel as arrays). The live states are literals in the SQL, never parameters, so a prepared statement's
# generic plan still matches the partial indexes (`state = 'available'` ...), and ON CONFLICT still finds
# the partial unique index (tests/domain/test_queue.py proves both).

Store = Session | Connection


class _Driver:
    """The caller's transaction, as its driver connection."""

    __slots__ = ("pg", "raw")

    def __init__(self, store: Store) -> None:
        connection = store.connection() if isinstance(store, Session) else store  # begins the transaction
        self.pg = is_postgres(connection)
        self.raw: Any = connection.connection.driver_connection

    def rows(self, sql: tuple[str, str], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self.pg:
            return list(self.raw.execute(sql[0], params, prepare=True).fetchall())
        return list(self.raw.execute(sql[1], {k: _sqlite_value(v) for k, v in params.items()}).fetchall())

    def run(self, sql: tuple[str, str], params: Mapping[str, Any]) -> None:
        if self.pg:
            self.raw.execute(sql[0], params, prepare=True)
        else:
            self.raw.execute(sql[1], {k: _sqlite_value(v) for k, v in params.items()})

    def now(self) -> datetime:
        return now_utc()  # read once the transaction has begun (on SQLite: under the write lock)


def _sqlite_value(value: Any) -> Any:
    # The storage SQLAlchemy uses for these columns on SQLite: UTC text, JSON text.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def _json_param(driver: _Driver, value: dict[str, Any]) -> Any:
    return Jsonb(value) if driver.pg else value


def _json_value(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str | bytes) else value  # type: ignore[no-any-return]


def _sql(pg: str, sqlite: str | None = None) -> tuple[str, str]:
    """One statement for both backends, written with `%(name)s` parameters; SQLite's text, unless given,
    is derived (`:name` parameters, no `::type` casts)."""
    if sqlite is None:
        sqlite = re.sub(r"%\((\w+)\)s", r":\1", re.sub(r"::\w+", "", pg))
    return pg, sqlite


_COLUMNS = "kind, tenant_id, payload, dedup_key, state, attempts, max_attempts, available_at, created_at, updated_at"
_VALUES = (
    "%(kind)s, %(tenant_id)s, %(payload)s, %(dedup_key)s, 'available', 0, %(max_attempts)s, %(available_at)s, "
    "%(now)s, %(now)s"
)
ENQUEUE_SQL = _sql(f"INSERT INTO trigger_queue ({_COLUMNS}) VALUES ({_VALUES}) RETURNING id")
# The conflict target names the partial unique index by its columns and its predicate, written out.
ENQUEUE_DEDUP_SQL = _sql(
    f"INSERT INTO trigger_queue ({_COLUMNS}) VALUES ({_VALUES}) "
    f"ON CONFLICT (kind, dedup_key) WHERE {LIVE_DEDUP_PREDICATE} DO NOTHING RETURNING id"
)
LIVE_TWIN_SQL = _sql(
    "SELECT id, payload, tenant_id FROM trigger_queue WHERE kind = %(kind)s AND dedup_key = %(dedup_key)s "
    "AND state IN ('available', 'claimed', 'launched')"
)
# PostgreSQL, many keyed triggers of one kind: the triggers as three arrays (one statement text whatever
# their number); RETURNING names each inserted row's key. One trigger, or SQLite: the one-row statements
# above, once per trigger.
ENQUEUE_KEYED_SQL = (
    f"INSERT INTO trigger_queue ({_COLUMNS}) "
    "SELECT %(kind)s, t.tenant_id, t.payload::jsonb, t.dedup_key, 'available', 0, %(max_attempts)s, "
    "%(available_at)s, %(now)s, %(now)s "
    "FROM unnest(%(tenant_ids)s::varchar[], %(payloads)s::text[], %(keys)s::varchar[]) "
    "AS t(tenant_id, payload, dedup_key) "
    f"ON CONFLICT (kind, dedup_key) WHERE {LIVE_DEDUP_PREDICATE} DO NOTHING RETURNING dedup_key, id"
)
LIVE_TWINS_SQL = (
    "SELECT dedup_key, id, payload, tenant_id FROM trigger_queue WHERE kind = %(kind)s "
    "AND dedup_key = ANY(%(keys)s::varchar[]) AND state IN ('available', 'claimed', 'launched')"
)

_CLAIM_SET = (
    "state = 'claimed', attempts = trigger_queue.attempts + 1, claim_token = {token}, claimed_at = %(now)s, "
    "lease_expires_at = %(expires)s, worker = %(worker)s, updated_at = %(now)s"
)
_CLAIM_RETURNING = (
    "RETURNING trigger_queue.id, trigger_queue.kind, trigger_queue.tenant_id, trigger_queue.payload, "
    "trigger_queue.attempts, trigger_queue.max_attempts, trigger_queue.claim_token"
)
# One kind (every sensor): `kind = $1` lets the partial index (kind, available_at, id) give the rows in
# order, so the claim reads `limit` index entries; several kinds go through an array.
_PICK = (
    "SELECT id FROM trigger_queue WHERE state = 'available' AND {kinds} AND available_at <= %(now)s "
    "ORDER BY available_at, id LIMIT %(limit)s"
)


def _claim_sql(kinds: str) -> tuple[str, str]:
    pick = _PICK.format(kinds=kinds)
    pg = (
        f"WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) "
        f"UPDATE trigger_queue SET {_CLAIM_SET.format(token='gen_random_uuid()::text')} "
        f"FROM picked WHERE trigger_queue.id = picked.id {_CLAIM_RETURNING}"
    )
    # SQLite: the transaction began IMMEDIATE (domain/store.py), so this runs under the write lock.
    sqlite = (
        f"UPDATE trigger_queue SET {_CLAIM_SET.format(token='lower(hex(randomblob(16)))')} "
        f"WHERE id IN ({pick}) {_CLAIM_RETURNING}"
    )
    return pg, _sql(sqlite)[1]


CLAIM_ONE_KIND_SQL = _claim_sql("kind = %(kind)s")
CLAIM_KINDS_SQL = (
    _claim_sql("kind = ANY(%(kinds)s)")[0],
    _claim_sql("kind IN (SELECT value FROM json_each(%(kinds)s))")[1],
)

_DONE_SET = (
    "state = 'done', claim_token = NULL, lease_expires_at = NULL, finished_at = %(now)s, updated_at = %(now)s, "
    "run_id = COALESCE({run_id}, trigger_queue.run_id)"
)
# PostgreSQL: the (id, token) pairs as two arrays, one statement text whatever the batch size.
ACK_SQL = (
    f"UPDATE trigger_queue SET {_DONE_SET.format(run_id='%(run_id)s::varchar')} "
    "FROM unnest(%(ids)s::bigint[], %(tokens)s::varchar[]) AS held(id, token) "
    "WHERE trigger_queue.id = held.id AND trigger_queue.claim_token = held.token "
    "AND trigger_queue.state IN ('claimed', 'launched') RETURNING trigger_queue.id",
    # SQLite: the pairs as a JSON array of [id, token]; the primary key finds each row.
    f"UPDATE trigger_queue SET {_sql(_DONE_SET.format(run_id='%(run_id)s'))[1]} "
    "WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(:held)) "
    "AND state IN ('claimed', 'launched') "
    "AND claim_token = (SELECT json_extract(value, '$[1]') FROM json_each(:held) "
    "WHERE json_extract(value, '$[0]') = trigger_queue.id) RETURNING id",
)


def _ack_and_claim_sql(kinds: str) -> str:
    """PostgreSQL: the ack and the next claim as one statement (one round trip). Its two updates touch
    disjoint rows (held ones; available ones), and the claim's pick cannot see the rows just acked."""
    pick = _PICK.format(kinds=kinds)
    ack = ACK_SQL[0]
    claim = (
        f"UPDATE trigger_queue SET {_CLAIM_SET.format(token='gen_random_uuid()::text')} "
        f"FROM picked WHERE trigger_queue.id = picked.id {_CLAIM_RETURNING}"
    )
    return (
        f"WITH acked AS ({ack}), picked AS ({pick} FOR UPDATE SKIP LOCKED), claimed AS ({claim}) "
        "SELECT true, id, NULL, NULL, NULL::jsonb, NULL::integer, NULL::integer, NULL FROM acked "
        "UNION ALL SELECT false, id, kind, tenant_id, payload, attempts, max_attempts, claim_token FROM claimed"
    )


ACK_AND_CLAIM_ONE_KIND_SQL = _ack_and_claim_sql("kind = %(kind)s")
ACK_AND_CLAIM_KINDS_SQL = _ack_and_claim_sql("kind = ANY(%(kinds)s)")


# Idempotent for its run: a row this run launched already stays as it is (launch time included), so a
# redelivered or re-executed step of the run holds it again.
LAUNCH_SQL = _sql(
    "UPDATE trigger_queue SET state = 'launched', run_id = %(run_id)s, lease_expires_at = NULL, "
    "updated_at = CASE WHEN state = 'claimed' THEN %(now)s ELSE updated_at END "
    "WHERE id = %(id)s AND claim_token = %(token)s "
    "AND (state = 'claimed' OR (state = 'launched' AND run_id = %(run_id)s)) RETURNING id"
)
# The rows a run holds (the launched index, by run id).
HELD_BY_RUN_SQL = _sql(
    "SELECT id, kind, tenant_id, payload, attempts, max_attempts, claim_token FROM trigger_queue "
    "WHERE state = 'launched' AND run_id = %(run_id)s AND kind = %(kind)s ORDER BY id"
)
HELD_ROW_SQL = _sql(
    "SELECT kind, attempts, max_attempts FROM trigger_queue WHERE id = %(id)s AND claim_token = %(token)s "
    "AND state IN ('claimed', 'launched') FOR UPDATE",
    "SELECT kind, attempts, max_attempts FROM trigger_queue WHERE id = :id AND claim_token = :token "
    "AND state IN ('claimed', 'launched')",
)
_FAIL_SET = (
    "UPDATE trigger_queue SET claim_token = NULL, lease_expires_at = NULL, last_error = %(error)s, "
    "updated_at = %(now)s, run_id = COALESCE(%(run_id)s::varchar, trigger_queue.run_id), "
)
_FAIL_WHERE = " WHERE id = %(id)s AND claim_token = %(token)s AND state IN ('claimed', 'launched')"
RETRY_SQL = _sql(_FAIL_SET + "state = 'available', available_at = %(available_at)s" + _FAIL_WHERE)
DIE_SQL = _sql(_FAIL_SET + "state = 'dead', finished_at = %(now)s" + _FAIL_WHERE)


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
    db = _Driver(session)
    now = db.now()
    values = {
        "kind": kind,
        "tenant_id": tenant_id,
        "payload": _json_param(db, body),
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
    db = _Driver(session)
    now = db.now()
    holders: dict[str, tuple[int, dict[str, Any], str | None]] = {}  # the live row of each key placed
    unplaced = dict(first)
    for _ in range(5):
        if not unplaced:
            break
        rows = [(triggers[n].tenant_id, bodies[n], key) for key, n in sorted(unplaced.items())]
        inserted = _insert_keyed(db, kind, kind_policy, rows, available_at or now, now)
        twins = _live_twins(db, kind, [key for key in unplaced if key not in inserted])
        for key, n in list(unplaced.items()):
            if key in inserted:
                holders[key] = (inserted[key], bodies[n], triggers[n].tenant_id)
            elif key in twins:  # a live trigger held the key already
                twin_id, twin_payload, twin_tenant = twins[key]
                holders[key] = (twin_id, _json_value(twin_payload), twin_tenant)
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


def _insert_keyed(
    db: _Driver,
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
        return {key: int(row_id) for key, row_id in db.raw.execute(ENQUEUE_KEYED_SQL, params, prepare=True)}
    inserted = {}
    for tenant, body, key in rows:
        values = {**common, "tenant_id": tenant, "payload": _json_param(db, body), "dedup_key": key}
        for (row_id,) in db.rows(ENQUEUE_DEDUP_SQL, values):
            inserted[key] = int(row_id)
    return inserted


def _live_twins(db: _Driver, kind: str, keys: list[str]) -> dict[str, tuple[int, Any, str | None]]:
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


def claim(session: Store, kinds: Sequence[str], limit: int, lease_seconds: float, worker: str) -> list[Claimed]:
    """available -> claimed, for up to `limit` due rows of `kinds`, oldest first: one statement."""
    return _claim(_Driver(session), kinds, limit, lease_seconds, worker)


def _claim(db: _Driver, kinds: Sequence[str], limit: int, lease_seconds: float, worker: str) -> list[Claimed]:
    now = db.now()
    params: dict[str, Any] = {
        "now": now,
        "expires": now + timedelta(seconds=lease_seconds),
        "worker": worker,
        "limit": limit,
    }
    kinds = list(kinds)
    if len(kinds) == 1:
        sql, params["kind"] = CLAIM_ONE_KIND_SQL, kinds[0]
    else:
        sql, params["kinds"] = CLAIM_KINDS_SQL, kinds if db.pg else json.dumps(kinds)
    rows = db.rows(sql, params)
    return sorted((Claimed(r[0], r[1], r[2], _json_value(r[3]), r[4], r[5], r[6]) for r in rows), key=lambda c: c.id)


def _held(row_id: int, token: str, states: Sequence[str] = HELD) -> Any:
    return and_(Q.c.id == row_id, Q.c.claim_token == token, Q.c.state.in_(list(states)))


def launch(session: Store, row_id: int, token: str, run_id: str) -> None:
    """claimed -> launched: a Dagster run now carries the row; its run-status sensor will ack or fail it.
    A row already launched by `run_id` with this token is held by that run: nothing changes (a step of
    the run delivered again launches its rows again)."""
    db = _Driver(session)
    if not db.rows(LAUNCH_SQL, {"id": row_id, "token": token, "run_id": run_id, "now": db.now()}):
        raise StaleClaim(f"trigger {row_id} is not claimed by this token")


def held_by_run(session: Store, kind: str, run_id: str) -> list[Claimed]:
    """The `kind` rows `run_id` holds (launched with its id), by id: one statement."""
    db = _Driver(session)
    rows = db.rows(HELD_BY_RUN_SQL, {"kind": kind, "run_id": run_id})
    return [Claimed(r[0], r[1], r[2], _json_value(r[3]), r[4], r[5], r[6]) for r in rows]


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


def ack_many(session: Store, held: Iterable[tuple[int, str]], run_id: str | None = None) -> set[int]:
    """claimed | launched -> done, for each (id, token) still held: one statement; returns the ids acked.
    `run_id` names the run that did it (the run of this claim: it carries the claim's token)."""
    return _ack(_Driver(session), list(held), run_id)


def _ack(db: _Driver, pairs: list[tuple[int, str]], run_id: str | None) -> set[int]:
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
    db = _Driver(session)
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
    """The kind's wait after `attempts` attempts: the one formula (domain/backoff.py)."""
    return timedelta(
        seconds=backoff_formula.backoff_seconds(attempts, kind_policy.backoff_base_s, kind_policy.backoff_max_s)
    )


def fail(
    session: Store, row_id: int, token: str, error: str, retryable: bool = True, run_id: str | None = None
) -> QueueState:
    """claimed | launched -> available (retry after backoff) or dead. Returns the new state. `run_id`, the
    run that failed, is recorded: its launch may not have been recorded yet when a run fails fast."""
    db = _Driver(session)
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
    now = _now(session)
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


@dataclass(frozen=True)
class Trigger:
    """A queue row as a run's reaction reads it."""

    id: int
    kind: str
    tenant_id: str | None
    payload: dict[str, Any]
    state: QueueState
    claim_token: str | None


def find(session: Session, row_id: int) -> Trigger | None:
    row = session.execute(
        select(Q.c.id, Q.c.kind, Q.c.tenant_id, Q.c.payload, Q.c.state, Q.c.claim_token).where(Q.c.id == row_id)
    ).one_or_none()
    if row is None:
        return None
    return Trigger(row.id, row.kind, row.tenant_id, _json_value(row.payload), S(row.state), row.claim_token)


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
