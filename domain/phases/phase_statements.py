"""The SQL of a phase trigger's two transactions (domain/phases/phases.py `begin` and `complete`).

The progress upsert is one text for both backends (PROGRESS_UPSERT). On PostgreSQL each transaction's
writes are one statement, so a trigger costs two round trips to the store, not ten:

    BEGIN_SQL     the progress upsert (running) and the `phase_started` event with its notice
    COMPLETE_SQL  the trigger acked (claim token checked), the progress upsert (completed), the audit row and
                  the `phase_completed` event with its notice; everything after the ack selects from it, so
                  a claim that no longer holds the trigger writes nothing and returns no row

SQLite, which has no INSERT or UPDATE inside WITH, runs the same writes as statements of their own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text

from domain.core.models import PhaseStatus, UTCDateTime
from domain.phases.phase_events import append_sql
from domain.queue.statements import ACK_ONE_SQL

P = PhaseStatus
# Moves within one phase; any status of a later phase may follow any status of an earlier one; an
# earlier phase never follows a later one (a late or repeated trigger leaves the progress as it is).
SAME_PHASE_MOVES: dict[PhaseStatus, frozenset[PhaseStatus]] = {
    P.PENDING: frozenset({P.RUNNING, P.COMPLETED, P.FAILED}),
    P.RUNNING: frozenset({P.COMPLETED, P.FAILED}),
    P.FAILED: frozenset({P.RUNNING, P.COMPLETED}),
    P.COMPLETED: frozenset(),
}


def _quoted(values: Any) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


# progress_allowed as SQL over the stored row (sync_progress) and the proposed one (excluded), written
# from the same table of moves; both backends have ON CONFLICT ... DO UPDATE ... WHERE and RETURNING.
_FORWARD = " OR ".join(
    f"(sync_progress.status = '{current.value}' AND excluded.status IN ({_quoted(moves)}))"
    for current, moves in SAME_PHASE_MOVES.items()
    if moves
)
_PROGRESS_COLUMNS = (
    "id, tenant_id, user_id, sync_id, seller_id, phase, status, percent, started_at, updated_at, completed_at"
)
_PROGRESS_ON_CONFLICT = (
    "ON CONFLICT (tenant_id, user_id, sync_id) DO UPDATE SET phase = excluded.phase, status = excluded.status, "
    "updated_at = excluded.updated_at, "
    "percent = CASE WHEN excluded.percent > sync_progress.percent THEN excluded.percent "
    "ELSE sync_progress.percent END, "
    "seller_id = COALESCE(NULLIF(sync_progress.seller_id, ''), excluded.seller_id), "
    "completed_at = COALESCE(excluded.completed_at, sync_progress.completed_at) "
    f"WHERE excluded.phase > sync_progress.phase OR (excluded.phase = sync_progress.phase AND ({_FORWARD})) "
    "RETURNING sync_progress.id"
)
# Compiled once (the dialects' insert() constructs are never cached).
PROGRESS_UPSERT = text(
    f"INSERT INTO sync_progress ({_PROGRESS_COLUMNS}) VALUES (:progress_id, :tenant_id, :user_id, :sync_id, "
    f":seller_id, :phase, :status, :percent, :now, :now, :completed_at) {_PROGRESS_ON_CONFLICT}"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("completed_at", type_=UTCDateTime()))

# PostgreSQL. A SELECT's parameters are not typed by the columns they go to (as VALUES' are): cast.
_PROGRESS_ROW = (
    "%(progress_id)s::varchar, %(tenant_id)s::varchar, %(user_id)s::varchar, %(sync_id)s::varchar, "
    "%(seller_id)s::varchar, %(phase)s::integer, %(status)s::varchar, %(percent)s::integer, "
    "%(now)s::timestamptz, %(now)s::timestamptz, %(completed_at)s::timestamptz"
)
BEGIN_SQL = append_sql(
    f"progress AS (INSERT INTO sync_progress ({_PROGRESS_COLUMNS}) VALUES ({_PROGRESS_ROW}) {_PROGRESS_ON_CONFLICT})"
)
COMPLETE_SQL = append_sql(
    f"acked AS ({ACK_ONE_SQL}), "
    f"progress AS (INSERT INTO sync_progress ({_PROGRESS_COLUMNS}) SELECT {_PROGRESS_ROW} FROM acked "
    f"{_PROGRESS_ON_CONFLICT}), "
    "audit AS (INSERT INTO phase_audit (tenant_id, user_id, sync_id, phase, trigger_id, run_id, attempt, outcome, "
    "duration_s, error, details, started_at, finished_at, counted) "
    "SELECT %(tenant_id)s::varchar, %(user_id)s::varchar, %(sync_id)s::varchar, %(phase)s::integer, acked.id, "
    "%(run_id)s::varchar, %(attempt)s::integer, %(outcome)s::varchar, %(duration_s)s::float8, NULL, "
    "%(details)s::jsonb, %(started_at)s::timestamptz, %(now)s::timestamptz, false FROM acked RETURNING id)",
    guard="acked",
)
