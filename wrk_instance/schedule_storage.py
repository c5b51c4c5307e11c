"""Dagster's SQLite schedule storage, without re-reading its schema at every sensor tick.

Dagster's SqliteScheduleStorage builds a new SQLAlchemy engine for every operation, and the bookkeeping
of each sensor tick asks SQLite for its table list (is there an `instigators` table? a
`secondary_indexes` one?) and whether a data migration ran, several times over: under a phase burst that
was most of the daemon's CPU (py-spy of `make bench BENCH=phases`). The schema changes only through
`dagster instance migrate`, which `make run` runs before the daemon starts, and a table or a finished
migration never goes away: so each storage object keeps an answer once it is yes (a no is asked again),
and builds its engine once (still a new SQLite connection per operation, as Dagster's NullPool has it).
Same file, same statements otherwise.

A subclass named in dagster.yaml (`schedule_storage:`), so every process that opens the instance
(daemon, webserver, code server, run workers) gets it and nothing is patched. Constructing it also
shares Dagster's parsed migration scripts in that process (dagster_migrations.py). PostgreSQL storage
(dagster.postgres.yaml, the Helm chart) does not use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from wrk_instance.dagster_migrations import share_dagster_migrations


class KeptSchemaScheduleStorage(SqliteScheduleStorage):
    """SqliteScheduleStorage that keeps its engine and the schema answers that are yes (module docstring).
    `base_dir` is optional: by default the instance's `schedules` folder, Dagster's own default, known
    once the instance registers itself (the file is made then, by Dagster's own `from_local`)."""

    def __init__(
        self, conn_string: str, inst_data: ConfigurableClassData | None = None, base_dir: str | None = None
    ) -> None:
        super().__init__(conn_string, inst_data)
        self._base_dir = base_dir
        self._engine: Engine | None = None
        self._present: set[str] = set()

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> KeptSchemaScheduleStorage:
        share_dagster_migrations()
        return cls("", inst_data, base_dir=config_value.get("base_dir"))

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if not self._conn_string:
            base_dir = self._base_dir or os.path.join(instance.root_directory, "schedules")
            self._conn_string = SqliteScheduleStorage.from_local(base_dir)._conn_string

    def _once(self, name: str, ask: Callable[[], bool]) -> bool:
        if name not in self._present and ask():
            self._present.add(name)
        return name in self._present

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        if self._engine is None:
            self._engine = create_engine(self._conn_string, poolclass=NullPool)
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _has_instigators_table(self, conn: Connection) -> bool:
        ask = super()._has_instigators_table
        return self._once("table:instigators", lambda: ask(conn))

    def has_secondary_index_table(self) -> bool:
        return self._once("table:secondary_indexes", super().has_secondary_index_table)

    def has_built_index(self, migration_name: str) -> bool:
        ask = super().has_built_index
        return self._once(f"migration:{migration_name}", lambda: ask(migration_name))
