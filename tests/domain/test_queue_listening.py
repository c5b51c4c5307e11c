"""A worker's wait for triggers (domain/queue/listening.py): on PostgreSQL an enqueue wakes it at commit,
for its kinds only, and a rolled-back enqueue does not; on SQLite it polls (the wait is the interval)."""

from __future__ import annotations

import threading

from domain.core.store import autocommit, transaction
from domain.queue import queue
from domain.queue.listening import Listener
from tests.domain import factories

LONG = 600.0  # a wait that a notice must end; no test waits this long unless it fails


def _tenant(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def _trigger(tenant: str, sync_id: str) -> dict:
    return {"phase": 1, "tenant_id": tenant, "user_id": "u", "sync_id": sync_id}


def test_an_enqueue_wakes_a_listener_of_its_kind_at_commit(engine, backend):
    tenant = _tenant(engine)
    with Listener(engine, ["phase"]) as listener:
        listener.listen()
        if backend != "postgresql":
            with autocommit(engine) as connection:
                queue.enqueue(connection, "phase", tenant, _trigger(tenant, "s"))
            assert listener.wait(0.01) is False  # SQLite: no notices; the caller polls
            return
        with transaction(engine) as session:  # another kind: no wake-up
            queue.enqueue(session, "release", None, {"tag": "v1.0.0"})
        assert listener.wait(0.2) is False
        try:
            with transaction(engine) as session:  # rolled back: no notice
                queue.enqueue(session, "phase", tenant, _trigger(tenant, "s"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        assert listener.wait(0.2) is False
        woke = threading.Event()

        def enqueue_later() -> None:
            with autocommit(engine) as connection:
                queue.enqueue(connection, "phase", tenant, _trigger(tenant, "s2"))
            woke.set()

        thread = threading.Thread(target=enqueue_later)
        thread.start()
        assert listener.wait(LONG) is True  # ended by the notice, not by the timeout
        thread.join()
        assert woke.is_set()
