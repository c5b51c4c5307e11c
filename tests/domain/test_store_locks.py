"""No store lock is held across a network call, and reads never take the write lock.

Ordered by events, not by time: a send (or a writer) is held open on an event while the other side
commits; the `SAFETY_S` waits only keep a broken build from hanging forever, they bound nothing.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from domain.core import models
from domain.core.notifications import deliver_due, notify, ops_alert
from domain.core.store import read_transaction, transaction
from tests.domain import factories

SAFETY_S = 120.0


def _alert(engine, key: str) -> None:
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary=key, details="d", dedup_key=key)


def test_a_slow_send_does_not_block_a_concurrent_write(engine):
    _alert(engine, "slow-1")
    in_send, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def slow_send(row: models.Notification) -> None:
        in_send.set()
        assert release.wait(SAFETY_S)
        sent.append(row.dedup_key)

    reports = []
    deliverer = threading.Thread(target=lambda: reports.append(deliver_due(engine, slow_send)))
    deliverer.start()
    try:
        assert in_send.wait(SAFETY_S)
        # While the mail server "answers", another writer adds an outbox row and touches the very row
        # being sent (it would wait on SQLite's write lock or PostgreSQL's row lock if either were held).
        with transaction(engine) as session:
            notify(
                session,
                channel=models.NotificationChannel.IN_APP,
                template="ops_alert",
                recipient="user-1",
                payload={"summary": "s", "details": "d", "severity": "low"},
                dedup_key="concurrent-write",
            )
            session.execute(
                update(models.Notification).where(models.Notification.dedup_key == "slow-1").values(read_at=func.now())
            )
        committed_while_sending = not release.is_set()
    finally:
        release.set()
        deliverer.join(SAFETY_S)
    assert committed_while_sending
    assert sent == ["slow-1"] and reports[0].sent == 1
    with read_transaction(engine) as session:
        rows = {n.dedup_key: n for n in session.scalars(select(models.Notification))}
    assert rows["slow-1"].status == "sent" and rows["slow-1"].attempts == 1 and rows["slow-1"].read_at is not None
    assert rows["concurrent-write"].status == "sent"


def test_a_claimed_row_is_not_sent_twice_by_a_concurrent_deliverer(engine):
    _alert(engine, "claimed-1")
    in_send, release = threading.Event(), threading.Event()
    first_sends: list[str] = []

    def held_send(row: models.Notification) -> None:
        in_send.set()
        assert release.wait(SAFETY_S)
        first_sends.append(row.dedup_key)

    second_sends: list[str] = []
    deliverer = threading.Thread(target=lambda: deliver_due(engine, held_send))
    deliverer.start()
    try:
        assert in_send.wait(SAFETY_S)
        report = deliver_due(engine, lambda row: second_sends.append(row.dedup_key))
    finally:
        release.set()
        deliverer.join(SAFETY_S)
    assert second_sends == [] and report.sent == 0
    assert first_sends == ["claimed-1"]


def test_a_read_transaction_does_not_wait_for_an_open_writer(engine):
    _alert(engine, "before")
    writer_holding, release_writer, read_done = threading.Event(), threading.Event(), threading.Event()
    counts: list[int] = []

    def writer() -> None:
        with transaction(engine) as session:
            ops_alert(session, "ops@wrk.test", summary="w", details="d", dedup_key="during")
            session.flush()  # on SQLite the write lock is now held until commit
            writer_holding.set()
            assert release_writer.wait(SAFETY_S)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writer_holding.wait(SAFETY_S)

        def reader() -> None:
            with read_transaction(engine) as session:
                counts.append(session.scalar(select(func.count()).select_from(models.Notification)) or 0)
            read_done.set()

        threading.Thread(target=reader, daemon=True).start()
        assert read_done.wait(SAFETY_S)
        read_while_writer_open = not release_writer.is_set()
    finally:
        release_writer.set()
        thread.join(SAFETY_S)
    assert read_while_writer_open
    assert counts == [1]  # the writer's uncommitted row is not seen


def test_a_write_inside_a_read_transaction_is_refused_on_postgresql(engine, backend):
    if backend != "postgresql":
        pytest.skip("SQLite has no read-only transaction; DEFERRED only avoids taking the write lock up front")
    with pytest.raises(DBAPIError, match="read-only"), read_transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="x", details="d", dedup_key="refused")


def test_a_read_transaction_sees_one_state_while_others_commit(engine):
    # /metrics adds the totals to the audit rows not folded yet: a fold committed between its two
    # statements must not count rows twice. A read sees the store as of its first statement.
    def tenants(session) -> int:
        return session.scalar(select(func.count()).select_from(models.Tenant))

    with read_transaction(engine) as snapshot:
        before = tenants(snapshot)
        with transaction(engine) as session:
            factories.tenant(session)
        assert tenants(snapshot) == before
    with read_transaction(engine) as session:
        assert tenants(session) == before + 1


def test_api_reads_answer_while_a_writer_holds_the_store(engine, demo_settings):
    from starlette.testclient import TestClient

    from api.app import create_app
    from tests.api.conftest import bearer, make_token

    with transaction(engine) as session:
        tenant_id = factories.tenant(session).id
    writer_holding, release_writer = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(engine) as session:
            ops_alert(session, "ops@wrk.test", summary="w", details="d", dedup_key="held")
            session.flush()
            writer_holding.set()
            assert release_writer.wait(SAFETY_S)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writer_holding.wait(SAFETY_S)
        token = make_token(demo_settings, tenants=[tenant_id], roles=["ops_admin"])
        with TestClient(create_app(demo_settings, engine), raise_server_exceptions=False) as client:
            ready = client.get("/ready")
            missing = client.get("/v1/automation-versions/nope", headers=bearer(token))
        answered_while_writer_open = not release_writer.is_set()
    finally:
        release_writer.set()
        thread.join(SAFETY_S)
    assert answered_while_writer_open
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert missing.status_code == 404  # read (in a read transaction), not stuck behind the writer


@pytest.fixture
def demo_settings():
    from domain.core.settings import Settings

    return Settings(environment="test")


def test_engine_for_keeps_the_configured_pool_of_postgresql_connections(monkeypatch, database_url, backend):
    """A pool smaller than the API's concurrent requests opened and closed a PostgreSQL backend per request
    (SQLAlchemy's default: 5 kept, 10 more opened and closed again)."""
    from domain.core.settings import get_settings
    from domain.core.store import dispose_engines, engine_for

    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "2")
    get_settings.cache_clear()
    try:
        engine = engine_for(database_url)
        if backend == "postgresql":
            assert engine.pool.size() == 3 and engine.pool._max_overflow == 2  # type: ignore[attr-defined]
            held = [engine.connect() for _ in range(5)]  # three kept and two more
            for connection in held:
                connection.close()
            assert engine.pool.checkedin() == 3  # type: ignore[attr-defined]
        with engine.connect() as connection:  # SQLite's pool is SQLAlchemy's own; both answer
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        dispose_engines()
        get_settings.cache_clear()
