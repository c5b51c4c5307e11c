"""The append side of the users' live streams: each phase's state change writes its event here, in the
same transaction, so an event exists exactly when the change it reports was committed.

Numbering: `seq` counts from 1 per (tenant, user) and is never reused. One upsert on
phase_event_sequences hands the next number out; it serialises concurrent appends for one user (a row
lock on PostgreSQL held to the end of the transaction, the write lock SQLite's BEGIN IMMEDIATE already
holds), so two transactions can never take the same number, and a rolled-back one gives its number back.

On PostgreSQL the append also sends `NOTIFY phase_events` (delivered at commit, dropped on rollback) with
{tenant_id, user_id, seq}: the live side (domain/phases/phase_stream.py) listens; on SQLite it polls. On
PostgreSQL the number, the row and the notice are one statement (one round trip: a phase run appends two
events per trigger); SQLite, which has no INSERT inside WITH, takes two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Table
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from domain.core.models import PhaseEvent, PhaseEventSequence, PhaseEventType, utcnow
from domain.core.store import is_postgres

NOTIFY_CHANNEL = "phase_events"
TYPES = frozenset(t.value for t in PhaseEventType)

# PostgreSQL: the next number, the event and its notice in one statement, prepared once per connection.
# `append_sql` writes it after other CTEs of the caller's (a phase's progress, audit and ack: one round
# trip for all it records); with a `guard` CTE, the event is appended only when the guard has a row.
_APPEND_CTES = (
    "next AS (INSERT INTO phase_event_sequences (tenant_id, user_id, last_seq) {numbered} "
    "ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seq = phase_event_sequences.last_seq + 1 "
    "RETURNING last_seq), "
    "event AS ("
    "INSERT INTO phase_events (tenant_id, user_id, seq, type, sync_id, phase, data, created_at) "
    "SELECT %(tenant_id)s, %(user_id)s, last_seq, %(type)s, %(sync_id)s, %(phase)s, %(data)s, %(created_at)s "
    "FROM next RETURNING id, seq) "
    f"SELECT id, seq, pg_notify('{NOTIFY_CHANNEL}', "
    "json_build_object('tenant_id', %(tenant_id)s::text, 'user_id', %(user_id)s::text, 'seq', seq)::text) "
    "FROM event"
)


def append_sql(before: str = "", guard: str | None = None) -> str:
    """PostgreSQL: one statement appending an event (its parameters: `values`), after the CTEs `before`
    (`name AS (...), ...`, run in the same statement); with `guard`, one of them, only if it has a row.
    Its row: the event's id and seq, none when the guard had no row."""
    numbered = (
        f"SELECT %(tenant_id)s, %(user_id)s, 1 FROM {guard}" if guard else "VALUES (%(tenant_id)s, %(user_id)s, 1)"
    )
    return "WITH " + (f"{before}, " if before else "") + _APPEND_CTES.format(numbered=numbered)


APPEND_SQL = append_sql()


@dataclass(frozen=True)
class Appended:
    id: int
    seq: int


def _next_seq(session: Session, tenant_id: str, user_id: str) -> int:
    """SQLite: the next number (APPEND_SQL's first half)."""
    table = PhaseEventSequence.__table__
    assert isinstance(table, Table)
    statement = (
        sqlite.insert(table)
        .values(tenant_id=tenant_id, user_id=user_id, last_seq=1)
        .on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.user_id], set_={"last_seq": table.c.last_seq + 1}
        )
        .returning(table.c.last_seq)
    )
    return int(session.execute(statement).scalar_one())


def values(
    tenant_id: str, user_id: str, sync_id: str, phase: int, type: str, data: dict[str, Any] | None
) -> dict[str, Any]:
    """An event's parameters for `append_sql` (its data as JSONB), checked: `type` is one of
    PhaseEventType's values, `data` JSON-serialisable (refused before anything is written)."""
    if type not in TYPES:
        raise ValueError(f"unknown phase event type {type!r}")
    if not 1 <= phase <= 7:
        raise ValueError(f"phase {phase} is not 1-7")
    payload = dict(data or {})
    json.dumps(payload)  # what the stream could not send
    return {
        "tenant_id": tenant_id,
        "user_id": user_id,
        "type": type,
        "sync_id": sync_id,
        "phase": phase,
        "data": Jsonb(payload),
        "created_at": utcnow(),
    }


def append(
    session: Session,
    *,
    tenant_id: str,
    user_id: str,
    sync_id: str,
    phase: int,
    type: str,  # the event's field name, as the stream shows it
    data: dict[str, Any] | None = None,
) -> Appended:
    """Add the next event of (tenant, user)'s stream in the caller's transaction; its id and seq.
    `type` is one of PhaseEventType's values; `data` must be JSON-serialisable."""
    checked = values(tenant_id, user_id, sync_id, phase, type, data)
    if is_postgres(session):
        raw: Any = session.connection().connection.driver_connection
        event_id, seq, _ = raw.execute(APPEND_SQL, checked, prepare=True).fetchone()
        return Appended(int(event_id), int(seq))
    seq = _next_seq(session, tenant_id, user_id)
    event = PhaseEvent(seq=seq, **{**checked, "data": checked["data"].obj})
    session.add(event)
    session.flush()
    return Appended(event.id, seq)
