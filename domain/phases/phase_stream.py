"""The read side of the users' live streams (the append side is domain/phases/phase_events.py).

A stream is one (tenant, user)'s phase events in `seq` order. The numbers are contiguous per stream
(a rolled-back append gives its number back) and every append takes a row lock on the stream's counter
until its commit, so events of one stream become visible in `seq` order. A reader that remembers the
last `seq` it delivered and reads `seq > last` from the table therefore misses nothing and repeats
nothing, whatever the notifications do: they only say *when* to read, the table says *what*.

The API's `PhaseStream` (api/phase_stream.py) fans these reads out to its subscribers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import Session

from domain.core.models import PhaseEvent, PhaseEventSequence

StreamKey = tuple[str, str]  # (tenant_id, user_id)
READ_BATCH = 500


def event_view(row: PhaseEvent) -> dict[str, Any]:
    """One event as the WebSocket and SSE endpoints send it."""
    created: datetime = row.created_at
    return {
        "seq": int(row.seq),
        "type": row.type,
        "tenant_id": row.tenant_id,
        "user_id": row.user_id,
        "sync_id": row.sync_id,
        "phase": int(row.phase),
        "data": row.data,
        "created_at": created.isoformat(),
    }


def events_after(
    session: Session, tenant_id: str, user_id: str, after: int, limit: int = READ_BATCH
) -> list[dict[str, Any]]:
    """The stream's events with `seq > after`, oldest first (at most `limit`)."""
    rows = session.scalars(
        select(PhaseEvent)
        .where(PhaseEvent.tenant_id == tenant_id, PhaseEvent.user_id == user_id, PhaseEvent.seq > after)
        .order_by(PhaseEvent.seq)
        .limit(limit)
    ).all()
    return [event_view(row) for row in rows]


def last_seq(session: Session, tenant_id: str, user_id: str) -> int:
    """The last number handed out on the stream (0 for a stream with no event yet). From the counter,
    not from the events: pruning old events does not move it back."""
    value = session.scalar(
        select(PhaseEventSequence.last_seq).where(
            PhaseEventSequence.tenant_id == tenant_id, PhaseEventSequence.user_id == user_id
        )
    )
    return int(value or 0)


def last_seqs(session: Session, keys: Iterable[StreamKey]) -> dict[StreamKey, int]:
    """The last number of each of `keys` that has one (the SQLite poller's one query per tick)."""
    found: dict[StreamKey, int] = {}
    wanted = list(keys)
    for start in range(0, len(wanted), 400):  # SQLite's bound-parameter limit
        chunk = wanted[start : start + 400]
        columns = tuple_(PhaseEventSequence.tenant_id, PhaseEventSequence.user_id)
        rows = session.execute(
            select(PhaseEventSequence.tenant_id, PhaseEventSequence.user_id, PhaseEventSequence.last_seq).where(
                columns.in_(chunk)
            )
        ).all()
        found.update({(tenant, user): int(seq) for tenant, user, seq in rows})
    return found


def listen_conninfo(engine: Engine) -> str:
    """The libpq URL of the store for a plain psycopg connection (SQLAlchemy's driver suffix removed)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
