"""The runbooks' SQL runs on the real tables: every statement of every ```sql block under docs/runbooks/
executes on a migrated store, on SQLite and PostgreSQL (PostgreSQL's own views only there)."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
SQL_BLOCK = re.compile(r"^\s*```sql\n(.*?)^\s*```", re.M | re.S)
POSTGRES_ONLY = ("pg_stat_activity",)


def _statements() -> list[tuple[str, str]]:
    found = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in SQL_BLOCK.findall(page.read_text()):
            code = "\n".join(re.sub(r"--.*$", "", line) for line in block.splitlines())
            found += [(page.name, s.strip()) for s in code.split(";") if s.strip()]
    return found


def test_the_runbooks_have_sql():
    assert len({page for page, _ in _statements()}) >= 8


def test_every_runbook_query_runs_on_the_store(engine, backend):
    failed = {}
    for page, statement in _statements():
        if backend != "postgresql" and any(view in statement for view in POSTGRES_ONLY):
            continue
        try:
            with engine.connect() as conn:
                conn.execute(text(statement)).fetchall()
        except SQLAlchemyError as exc:
            failed[f"{page}: {statement[:60]}"] = str(exc).splitlines()[0]
    assert failed == {}
