"""The queue's SQL on the driver's connection: every statement of the hot paths (enqueue, claim, launch, ack,
fail), for PostgreSQL and for SQLite, and the driver connection they run on (domain/queue/queue.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from domain.core.models import QUEUE_LIVE_STATES, QueueState, TriggerQueue
from domain.core.store import is_postgres

Q: Table = TriggerQueue.__table__  # type: ignore[assignment]
S = QueueState
LIVE = [s.value for s in QUEUE_LIVE_STATES]
HELD = [S.CLAIMED.value, S.LAUNCHED.value]
LIVE_DEDUP_PREDICATE = "dedup_key IS NOT NULL AND state IN ('available', 'claimed', 'launched')"


def now_utc() -> datetime:
    return datetime.now(UTC)


def now_in(session: Session) -> datetime:
    """The time, read once the transaction has begun: on SQLite that is once the write lock is held, so
    a writer that waited for the lock does not stamp rows with the time it started waiting."""
    session.connection()
    return now_utc()


# -- the hot paths: driver SQL ---------------------------------------------------------------------------
#
# enqueue, claim, launch, ack and fail run as plain SQL on the driver's connection (psycopg 3 or sqlite3),
# inside the caller's transaction: no ORM, no statement compilation, one round trip per statement. On
# PostgreSQL every statement is prepared server-side on first use (one fixed text per statement: lists
# travel as arrays). The live states are literals in the SQL, never parameters, so a prepared statement's
# generic plan still matches the partial indexes (`state = 'available'` ...), and ON CONFLICT still finds
# the partial unique index (tests/domain/test_queue.py proves both).

Store = Session | Connection


class Driver:
    """The caller's transaction, as its driver connection."""

    __slots__ = ("pg", "raw")

    def __init__(self, store: Store) -> None:
        connection = store.connection() if isinstance(store, Session) else store  # begins the transaction
        self.pg = is_postgres(connection)
        self.raw: Any = connection.connection.driver_connection

    def rows(self, sql: tuple[str, str], params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        if self.pg:
            return list(self.raw.execute(sql[0], params, prepare=True).fetchall())
        return list(self.raw.execute(sql[1], {k: sqlite_value(v) for k, v in params.items()}).fetchall())

    def run(self, sql: tuple[str, str], params: Mapping[str, Any]) -> None:
        if self.pg:
            self.raw.execute(sql[0], params, prepare=True)
        else:
            self.raw.execute(sql[1], {k: sqlite_value(v) for k, v in params.items()})

    def now(self) -> datetime:
        return now_utc()  # read once the transaction has begun (on SQLite: under the write lock)


def sqlite_value(value: Any) -> Any:
    # The storage SQLAlchemy uses for these columns on SQLite: UTC text, JSON text.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def json_param(driver: Driver, value: dict[str, Any]) -> Any:
    return Jsonb(value) if driver.pg else value


def json_value(value: Any) -> dict[str, Any]:
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
# PostgreSQL: every enqueue also sends `NOTIFY trigger_queue, '<kind>'` (delivered at its commit, dropped
# on rollback; equal notices of one transaction are folded into one), so a worker listening for its kind
# (domain/queue/listening.py) claims the trigger as soon as it is committed instead of at its next poll.
QUEUE_CHANNEL = "trigger_queue"


def _notifying(insert: str) -> str:
    """PostgreSQL: `insert` (an INSERT ... RETURNING), with the notice of each inserted row's kind."""
    return (
        f"WITH inserted AS ({insert}, kind) SELECT inserted.* FROM inserted "
        f"CROSS JOIN LATERAL (SELECT pg_notify('{QUEUE_CHANNEL}', inserted.kind)) AS notice"
    )


def _enqueue_sql(insert: str) -> tuple[str, str]:
    """The insert, notifying on PostgreSQL; as it is on SQLite (which polls). Its rows end with the kind."""
    return _notifying(insert), _sql(f"{insert}, kind")[1]


_INSERT = f"INSERT INTO trigger_queue ({_COLUMNS}) VALUES ({_VALUES}) "
ENQUEUE_SQL = _enqueue_sql(_INSERT + "RETURNING id")
# The conflict target names the partial unique index by its columns and its predicate, written out.
ENQUEUE_DEDUP_SQL = _enqueue_sql(
    _INSERT + f"ON CONFLICT (kind, dedup_key) WHERE {LIVE_DEDUP_PREDICATE} DO NOTHING RETURNING id"
)
LIVE_TWIN_SQL = _sql(
    "SELECT id, payload, tenant_id FROM trigger_queue WHERE kind = %(kind)s AND dedup_key = %(dedup_key)s "
    "AND state IN ('available', 'claimed', 'launched')"
)
# PostgreSQL, many keyed triggers of one kind: the triggers as three arrays (one statement text whatever
# their number); RETURNING names each inserted row's key. One trigger, or SQLite: the one-row statements
# above, once per trigger.
ENQUEUE_KEYED_SQL = _notifying(
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
    "attempts = trigger_queue.attempts + 1, claim_token = {token}, claimed_at = %(now)s, worker = %(worker)s, "
    "updated_at = %(now)s, "
)
# claimed with a lease (a sensor's claim, launched once its run is submitted); or, for a run claiming for
# itself (a phase worker), launched with its run id at once: run monitoring, not a lease, then owns it.
_CLAIMED = "state = 'claimed', lease_expires_at = %(expires)s"
_LAUNCHED = "state = 'launched', lease_expires_at = NULL, run_id = %(run_id)s"


def _claim_set(token: str, launched: bool = False) -> str:
    return _CLAIM_SET.format(token=token) + (_LAUNCHED if launched else _CLAIMED)


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


def _claim_sql(kinds: str, launched: bool = False) -> tuple[str, str]:
    pick = _PICK.format(kinds=kinds)
    pg = (
        f"WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) "
        f"UPDATE trigger_queue SET {_claim_set('gen_random_uuid()::text', launched)} "
        f"FROM picked WHERE trigger_queue.id = picked.id {_CLAIM_RETURNING}"
    )
    # SQLite: the transaction began IMMEDIATE (domain/core/store.py), so this runs under the write lock.
    sqlite = (
        f"UPDATE trigger_queue SET {_claim_set('lower(hex(randomblob(16)))', launched)} "
        f"WHERE id IN ({pick}) {_CLAIM_RETURNING}"
    )
    return pg, _sql(sqlite)[1]


def _claim_kinds_sql(launched: bool = False) -> tuple[str, str]:
    return (
        _claim_sql("kind = ANY(%(kinds)s)", launched)[0],
        _claim_sql("kind IN (SELECT value FROM json_each(%(kinds)s))", launched)[1],
    )


CLAIM_ONE_KIND_SQL = _claim_sql("kind = %(kind)s")
CLAIM_KINDS_SQL = _claim_kinds_sql()
CLAIM_LAUNCHED_ONE_KIND_SQL = _claim_sql("kind = %(kind)s", launched=True)
CLAIM_LAUNCHED_KINDS_SQL = _claim_kinds_sql(launched=True)

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

# PostgreSQL, as a CTE of a caller's statement (a phase's completion, domain/phases/phase_statements.py):
# one held row acked; its id, or no row when the claim no longer holds it.
ACK_ONE_SQL = (
    f"UPDATE trigger_queue SET {_DONE_SET.format(run_id='%(run_id)s::varchar')} "
    "WHERE id = %(trigger_id)s AND claim_token = %(claim_token)s AND state IN ('claimed', 'launched') RETURNING id"
)


def _ack_and_claim_sql(kinds: str) -> str:
    """PostgreSQL: the ack and the next claim as one statement (one round trip). Its two updates touch
    disjoint rows (held ones; available ones), and the claim's pick cannot see the rows just acked."""
    pick = _PICK.format(kinds=kinds)
    ack = ACK_SQL[0]
    claim = (
        f"UPDATE trigger_queue SET {_claim_set('gen_random_uuid()::text')} "
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
