"""Engines and sessions for the store: SQLite (embedded default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from domain.core.settings import Settings, get_settings, normalise_url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip per transaction. A connection found dead raises once, and
    # SQLAlchemy then invalidates the pool; recycling keeps connections from aging out server-side.
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot take the write lock up front. Every
    # transaction here starts with BEGIN IMMEDIATE instead: writers queue on busy_timeout rather than
    # failing with SQLITE_BUSY on lock upgrade, which makes "SELECT then UPDATE" as safe as
    # PostgreSQL's row locks for the embedded store.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read-only transaction (read_transaction) begins DEFERRED: it reads a WAL snapshot and never
        # takes the write lock, so readers do not queue behind a writer nor hold writers up.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "wrk_read_only"


def is_postgres(bind: Engine | Connection | Session) -> bool:
    """The one dialect test: PostgreSQL (psycopg 3) or the embedded SQLite."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name == "postgresql"


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str, settings: Settings | None = None) -> Engine:
    """One engine (one pool) per URL and process; on PostgreSQL its pool is DATABASE_POOL_SIZE connections
    kept open (a connection opened per request is a backend started per request) and at most
    DATABASE_MAX_OVERFLOW more while that many are busy (of `settings`, by default the process's)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            pool: dict[str, Any] = {}
            if make_url(normalise_url(url)).get_backend_name() == "postgresql":
                settings = settings or get_settings()
                pool = {"pool_size": settings.database_pool_size, "max_overflow": settings.database_max_overflow}
            engine = _engines[url] = make_engine(url, **pool)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection of the engines engine_for made (a test's databases are dropped after
    it: their pools must not keep connections open, PostgreSQL's max_connections is shared by the suite)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


_factories: weakref.WeakKeyDictionary[Engine, sessionmaker[Session]] = weakref.WeakKeyDictionary()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """One sessionmaker per engine (making one per transaction costs more than a round trip)."""
    factory = _factories.get(engine)
    if factory is None:
        factory = _factories[engine] = sessionmaker(bind=engine, expire_on_commit=False)
    return factory


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any error. On SQLite it holds
    the write lock from its first statement to its end: never make a network call inside it."""
    with session_factory(engine)() as session, session.begin():
        yield session


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection whose every statement is a transaction of its own, for work each of whose
    statements stands alone (queue.enqueue from the API). On PostgreSQL the statement and its commit
    are one round trip instead of three (BEGIN, statement, COMMIT); the commit still waits for its WAL
    flush. On SQLite, an ordinary transaction (BEGIN IMMEDIATE)."""
    if is_postgres(engine):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection
    else:
        with engine.begin() as connection:
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Session]:
    """A session in one read-only transaction (API GETs, sensors' counts, reports), rolled back at the
    end. Every statement in it reads the same snapshot, so a view made of several statements never shows
    half of a commit (a sync's progress row from before a phase completed and its audit row from after).
    On SQLite it begins DEFERRED (a WAL snapshot) and never takes the write lock; on PostgreSQL it is
    READ ONLY (a write slipped into a read path fails loudly) and REPEATABLE READ (READ COMMITTED gives
    each statement its own snapshot; a read-only transaction never fails to serialize)."""
    with session_factory(engine)(bind=reader(engine)) as session:
        session.begin()
        yield session


def reader(engine: Engine) -> Engine:
    """The engine for read-only work (read_transaction, or plain `connect()` for health checks): a cheap
    proxy sharing the engine's pool, whose transactions begin DEFERRED on SQLite, READ ONLY and
    REPEATABLE READ on PostgreSQL."""
    options: dict[str, Any] = {READ_ONLY_OPTION: True}
    if is_postgres(engine):
        options["postgresql_readonly"] = True
        options["isolation_level"] = "REPEATABLE READ"
    return engine.execution_options(**options)
