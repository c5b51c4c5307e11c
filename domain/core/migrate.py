"""Run the store's Alembic migrations from code (the CLI, tests and `make run` use this)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# What Alembic says each time it opens a migration context, reading the revision too (every CLI command,
# every process's first store use): noise on stderr. Its migrations' own lines ("Running upgrade ...") stay.
CONTEXT_CHATTER = ("Context impl ", "Will assume ")


def _not_chatter(record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith(CONTEXT_CHATTER))


logging.getLogger("alembic.runtime.migration").addFilter(_not_chatter)


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


class StoreNotMigrated(RuntimeError):
    pass


_migrated: set[str] = set()
_migrated_lock = threading.Lock()


def require_migrated(engine: Engine) -> Engine:
    """`engine`, once its store is at the migrations' head (checked once per process and URL). A store not
    migrated (or by other code) is refused naming it and `wrk-orch migrate`, rather than failing later with
    an SQL error (`no such table`) from inside a run."""
    key = engine.url.render_as_string(hide_password=False)
    with _migrated_lock:
        if key in _migrated:
            return engine
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise StoreNotMigrated(
            f"the store at {engine.url.render_as_string(hide_password=True)} is at revision "
            f"{current or 'none (not migrated)'}, not {head}: run `wrk-orch migrate` with this DATABASE_URL"
        )
    with _migrated_lock:
        _migrated.add(key)
    return engine
