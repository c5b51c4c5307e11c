"""Dagster's own storage migrations, parsed once per process (see share_dagster_migrations). Applied by
the fork servers' preload and by the schedule storage dagster.yaml names (every process opening the
instance, the code server's sensor ticks included)."""

from __future__ import annotations

from typing import Any


def share_dagster_migrations() -> None:
    """Read Dagster's own storage migrations once per process, instead of once per storage opened.

    Each SQLite storage (runs, the event log's index and each run's shard, schedules) checks its
    schema revision when a process first opens it, and alembic's ScriptDirectory parses Dagster's ~90
    migration scripts on every check, several times per forked worker (docs/performance.md). Those
    scripts are part of the installed Dagster
    and cannot change while a process lives, so the parsed directory of that one location is kept (and
    shared by every process forked from this one); any other script location is read as before. The
    code server needs it too: it evaluates every sensor tick with a DagsterInstance made afresh from its
    ref, which checked the revisions of three SQLite storages each time.
    tests/wrk_instance/test_preload.py fails if Dagster stops going through this
    path."""
    from alembic.script import ScriptDirectory
    from dagster._core.storage.runs.sqlite import sqlite_run_storage
    from dagster._core.storage.sql import ALEMBIC_SCRIPTS_LOCATION, get_alembic_config

    if getattr(ScriptDirectory.from_config, "_wrk_shared", False):
        return
    original = ScriptDirectory.from_config
    shared: dict[type, ScriptDirectory] = {}

    def from_config(cls: type[ScriptDirectory], config: Any) -> ScriptDirectory:
        if config.get_alembic_option("script_location") != ALEMBIC_SCRIPTS_LOCATION:
            return original.__func__(cls, config)  # type: ignore[attr-defined, no-any-return]
        if cls not in shared:
            script = original.__func__(cls, config)  # type: ignore[attr-defined]
            script.get_heads()  # parse the revisions now, in the process that forks the workers
            shared[cls] = script
        return shared[cls]

    from_config._wrk_shared = True  # type: ignore[attr-defined]
    ScriptDirectory.from_config = classmethod(from_config)  # type: ignore[method-assign, assignment]
    ScriptDirectory.from_config(get_alembic_config(sqlite_run_storage.__file__))
