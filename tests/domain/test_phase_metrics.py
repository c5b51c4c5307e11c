"""/metrics' phase figures: the audit rows not folded yet are found through their partial index on both
backends (a scrape and a fold read only them, not the whole audit)."""

from __future__ import annotations

from sqlalchemy import Engine

from domain.core.store import is_postgres
from domain.phases import phase_metrics


def _plan(engine: Engine, statement) -> str:
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN" if is_postgres(engine) else "EXPLAIN QUERY PLAN"
    with engine.connect() as connection:
        if is_postgres(engine):
            connection.exec_driver_sql("SET enable_seqscan = off")  # an empty table: the planner's own choice
        rows = connection.exec_driver_sql(f"{explain} {compiled}").all()
        connection.rollback()
    return "\n".join(str(row[-1]) for row in rows)


def test_the_rows_not_folded_yet_are_read_through_their_partial_index(engine):
    for statement in (phase_metrics._unfolded(), phase_metrics._unfolded(for_update=True)):
        plan = _plan(engine, statement)
        assert "ix_phase_audit_uncounted" in plan, plan
