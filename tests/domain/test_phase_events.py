"""Phase events (the append side): per-user sequence numbers from 1, unique under concurrent appends on
both backends, never reused after pruning, written in the caller's transaction (a rollback leaves
nothing), and pruned after PHASE_EVENTS_RETENTION."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select, update

from domain.core import housekeeping
from domain.core.models import PhaseEvent
from domain.core.store import transaction
from domain.phases import phase_events
from tests.domain import factories


def _tenant(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def _append(engine, tenant_id: str, user_id: str, type_: str = "phase_started", **data) -> int:
    with transaction(engine) as session:
        event = phase_events.append(
            session, tenant_id=tenant_id, user_id=user_id, sync_id="sync-1", phase=1, type=type_, data=data
        )
        return event.seq


def _seqs(engine, tenant_id: str, user_id: str) -> list[int]:
    with transaction(engine) as session:
        query = select(PhaseEvent.seq).where(PhaseEvent.tenant_id == tenant_id, PhaseEvent.user_id == user_id)
        return sorted(session.scalars(query))


def test_each_user_of_each_tenant_counts_from_one(engine):
    t1, t2 = _tenant(engine), _tenant(engine)
    assert [_append(engine, t1, "alice") for _ in range(3)] == [1, 2, 3]
    assert _append(engine, t1, "bob") == 1
    assert _append(engine, t2, "alice") == 1  # same user id, another tenant: its own stream
    with transaction(engine) as session:
        event = session.scalars(select(PhaseEvent).where(PhaseEvent.tenant_id == t1, PhaseEvent.seq == 2)).one()
        assert (event.user_id, event.type, event.sync_id, event.phase) == ("alice", "phase_started", "sync-1", 1)
        assert event.created_at.tzinfo is not None


def test_data_round_trips_and_bad_input_is_refused_before_writing(engine):
    tenant = _tenant(engine)
    _append(engine, tenant, "u", "prompt", claim_id="c1", confidence="0.7")
    with transaction(engine) as session:
        assert session.scalars(select(PhaseEvent.data)).one() == {"claim_id": "c1", "confidence": "0.7"}
        with pytest.raises(ValueError, match="type"):
            phase_events.append(session, tenant_id=tenant, user_id="u", sync_id="s", phase=1, type="bogus")
        with pytest.raises(ValueError, match="phase"):
            phase_events.append(session, tenant_id=tenant, user_id="u", sync_id="s", phase=8, type="prompt")
        with pytest.raises(TypeError):
            phase_events.append(
                session, tenant_id=tenant, user_id="u", sync_id="s", phase=1, type="prompt", data={"x": object()}
            )
    assert _seqs(engine, tenant, "u") == [1]


def test_a_rolled_back_transaction_leaves_no_event_and_no_gap(engine):
    tenant = _tenant(engine)
    with pytest.raises(RuntimeError), transaction(engine) as session:
        phase_events.append(session, tenant_id=tenant, user_id="u", sync_id="s", phase=2, type="phase_failed")
        raise RuntimeError("the phase's state change failed")
    assert _append(engine, tenant, "u") == 1
    assert _seqs(engine, tenant, "u") == [1]


def test_concurrent_appends_for_one_user_take_distinct_consecutive_numbers(engine):
    tenant = _tenant(engine)
    threads, per_thread = 8, 5
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                _append(engine, tenant, "busy-user")
        except BaseException as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    assert _seqs(engine, tenant, "busy-user") == list(range(1, threads * per_thread + 1))


def test_pruning_removes_old_events_and_numbers_are_not_reused(engine):
    tenant = _tenant(engine)
    for _ in range(3):
        _append(engine, tenant, "u")
    with transaction(engine) as session:
        old = datetime.now(UTC) - timedelta(days=30)
        session.execute(update(PhaseEvent).where(PhaseEvent.seq <= 2).values(created_at=old))
    with transaction(engine) as session:
        assert housekeeping.prune_phase_events(session, timedelta(days=7)) == 2
    assert _seqs(engine, tenant, "u") == [3]
    assert _append(engine, tenant, "u") == 4


def test_postgres_appends_notify_at_commit(engine, backend):
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")

    tenant = _tenant(engine)
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {phase_events.NOTIFY_CHANNEL}")
        _append(engine, tenant, "u")
        notice = next(listener.notifies(timeout=600, stop_after=1))  # only stops a broken store hanging
    assert json.loads(notice.payload) == {"tenant_id": tenant, "user_id": "u", "seq": 1}
