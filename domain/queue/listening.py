"""How a long-lived worker waits for triggers of its kinds: on PostgreSQL it LISTENs on the queue's
channel (every enqueue notifies it at commit: domain/queue/statements.py), on SQLite it polls.

A notice only says *when* to claim; the claim itself (FOR UPDATE SKIP LOCKED) says *what*. A lost notice
(the LISTEN connection dropped, a trigger whose backoff ran out, a requeue) costs at most one poll
interval, never a trigger: `wait` always returns within its timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import psycopg
from sqlalchemy import Engine

from domain.core.store import is_postgres
from domain.queue.statements import QUEUE_CHANNEL


class Listener:
    """`wait(timeout)`: until a trigger of `kinds` was enqueued (PostgreSQL) or `timeout` passed. Holds one
    autocommit connection of its own on PostgreSQL, opened on first use and again after it failed."""

    def __init__(self, engine: Engine, kinds: Sequence[str]) -> None:
        self.kinds = frozenset(kinds)
        self.listens = is_postgres(engine)
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: Any = None

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()

    def _connect(self) -> Any:
        if self._connection is None:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            connection.execute(f"LISTEN {QUEUE_CHANNEL}")
            self._connection = connection
        return self._connection

    def listen(self) -> None:
        """Start listening now (before the first claim), so a trigger committed after it is heard; a store
        that cannot be reached is tried again at the next `wait`."""
        if self.listens:
            try:
                self._connect()
            except psycopg.Error:
                self.close()

    def wait(self, timeout: float) -> bool:
        """True when a notice for one of `kinds` arrived (notices already queued count), False after
        `timeout`. On SQLite, or while the store cannot be reached, it sleeps `timeout`."""
        if not self.listens:
            time.sleep(timeout)
            return False
        deadline = time.monotonic() + timeout
        try:
            connection = self._connect()
            while (left := deadline - time.monotonic()) > 0:
                # stop_after=1 still yields every notice already received: they are all answered by
                # the one claim about to run.
                kinds = {notice.payload for notice in connection.notifies(timeout=left, stop_after=1)}
                if kinds & self.kinds:
                    return True
            return False
        except psycopg.Error:  # the store went away: listen again next time, meanwhile wait the poll
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))
            return False
