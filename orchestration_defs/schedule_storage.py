"""Dagster's SQLite schedule storage, without re-reading its schema at every sensor tick.

Dagster's SqliteScheduleStorage builds a new SQLAlchemy engine for every operation, and the bookkeeping
of each sensor tick asks SQLite for its table list (is there an `instigators` table? a
`secondary_indexes` one?) and whether a data migration ran, several times over: under a phase burst that
was most of the daemon's CPU (figures in docs/performance.md). The schema changes only through
`dagster instance migrate`, which `make run`
runs before the daemon starts, and a table or a finished migration never goes away: so each storage
object keeps an answer once it is yes (a no is asked again), and builds its engine once (still a new
SQLite connection per operation, as Dagster's NullPool has it). Same file, same statements otherwise.

Applied where orchestration_defs/launcher.py is loaded (dagster.yaml names it: the daemon loads it at
start) and in the code server (orchestration_defs/definitions.py: its sensor ticks open the instance too). The
storage's configuration is untouched (Dagster's default, under DAGSTER_HOME). PostgreSQL storage
(dagster.postgres.yaml) is not concerned. tests/orchestration_defs/test_schedule_storage.py fails if
Dagster stops going through these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PATCHED = "_wrk_schema_kept"


def keep_schedule_schema() -> None:
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    if getattr(SqliteScheduleStorage, PATCHED, False):
        return
    has_instigators_table = SqliteScheduleStorage._has_instigators_table
    has_secondary_index_table = SqliteScheduleStorage.has_secondary_index_table
    has_built_index = SqliteScheduleStorage.has_built_index

    def once(storage: Any, name: str, ask: Callable[[], bool]) -> bool:
        present: set[str] = storage.__dict__.setdefault("_wrk_present", set())
        if name not in present and ask():
            present.add(name)
        return name in present

    @contextmanager
    def connect(self: Any) -> Iterator[Any]:
        engine = self.__dict__.get("_wrk_engine")
        if engine is None:
            engine = self.__dict__["_wrk_engine"] = create_engine(self._conn_string, poolclass=NullPool)
        with engine.connect() as conn, conn.begin():
            yield conn

    SqliteScheduleStorage.connect = connect  # type: ignore[method-assign]
    SqliteScheduleStorage._has_instigators_table = lambda self, conn: once(  # type: ignore[method-assign]
        self, "table:instigators", lambda: has_instigators_table(self, conn)
    )
    SqliteScheduleStorage.has_secondary_index_table = lambda self: once(  # type: ignore[method-assign]
        self, "table:secondary_indexes", lambda: has_secondary_index_table(self)
    )
    SqliteScheduleStorage.has_built_index = lambda self, name: once(  # type: ignore[method-assign]
        self, f"migration:{name}", lambda: has_built_index(self, name)
    )
    setattr(SqliteScheduleStorage, PATCHED, True)
