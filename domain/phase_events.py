"""The append side of the users' live streams: each phase's state change writes its event here, in the
same transaction, so an event exists exactly when the change it reports was committed.

Numbering: `seq` counts from 1 per (tenant, user) and is never reused. One upsert on
phase_event_sequences hands the next number out; it serialises concurrent appends for one user (a row
lock on PostgreSQL held to the end of the transaction, the write lock SQLite's BEGIN IMMEDIATE already
holds), so two transactions can never take the same number, and a rolled-back one gives its number back.

On PostgreSQL the append also sends `NOTIFY phase_events` (delivered at commit, dropped on rollback) with
{tenant_id, user_id, seq}: the live side (domain/phase_stream.py) listens; on SQLite it polls.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from domain.models import PhaseEvent, PhaseEventSequence, PhaseEventType, utcnow

NOTIFY_CHANNEL = "phase_events"
TYPES = frozenset(t.value for t in PhaseEventType)


def _next_seq(session: Session, tenant_id: str, user_id: str) -> int:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = PhaseEventSequence.__table__
    assert isinstance(table, Table)
    statement = (
        insert(table)
        .values(tenant_id=tenant_id, user_id=user_id, last_seq=1)
        .on_conflict_do_update(
            index_elements=[table.c.tenant_id, table.c.user_id], set_={"last_seq": table.c.last_seq + 1}
        )
        .returning(table.c.last_seq)
    )
    return int(session.execute(statement).scalar_one())


def append(
    session: Session,
    *,
    tenant_id: str,
    user_id: str,
    sync_id: str,
    phase: int,
    type: str,  # the event's field name, as the stream shows it
    data: dict[str, Any] | None = None,
) -> PhaseEvent:
    """Add the next event of (tenant, user)'s stream in the caller's transaction and return it (flushed:
    id and seq set). `type` is one of PhaseEventType's values; `data` must be JSON-serialisable."""
    if type not in TYPES:
        raise ValueError(f"unknown phase event type {type!r}")
    if not 1 <= phase <= 7:
        raise ValueError(f"phase {phase} is not 1-7")
    payload = dict(data or {})
    json.dumps(payload)  # refuse what the stream could not send, before anything is written
    seq = _next_seq(session, tenant_id, user_id)
    event = PhaseEvent(
        tenant_id=tenant_id,
        user_id=user_id,
        seq=seq,
        type=type,
        sync_id=sync_id,
        phase=phase,
        data=payload,
        created_at=utcnow(),
    )
    session.add(event)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        notice = json.dumps({"tenant_id": tenant_id, "user_id": user_id, "seq": seq})
        session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": notice})
    return event
