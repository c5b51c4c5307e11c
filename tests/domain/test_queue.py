from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import func, select, text, update

from domain.core.errors import UnknownTenant
from domain.core.models import QueueState, TriggerQueue
from domain.core.store import autocommit, is_postgres, transaction
from domain.queue import queue, statements
from domain.queue.triggers import KINDS
from tests.domain import factories


def _build_payload(tenant_id: str, n: int = 1) -> dict:
    return {
        "tenant_id": tenant_id,
        "project_id": f"p{n}",
        "automation_version_id": f"v{n}",
        "workflow_binding_id": f"b{n}",
    }


@pytest.fixture
def tenant_id(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def _row(engine, row_id) -> TriggerQueue:
    with transaction(engine) as session:
        return session.get(TriggerQueue, row_id)


def _count(engine) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(TriggerQueue))


def test_unknown_kind_or_invalid_payload_is_refused_naming_the_field_and_stores_nothing(engine, tenant_id):
    with transaction(engine) as session:
        with pytest.raises(queue.InvalidTrigger) as unknown:
            queue.enqueue(session, "nope", tenant_id, {})
        assert unknown.value.errors == [{"field": "kind", "message": "unknown kind"}]
        with pytest.raises(queue.InvalidTrigger) as invalid:
            queue.enqueue(
                session, "phase", tenant_id, {"tenant_id": tenant_id, "user_id": "u", "sync_id": "s", "phase": 9}
            )
        assert [e["field"] for e in invalid.value.errors] == ["phase"]
        with pytest.raises(queue.InvalidTrigger) as extra:
            queue.enqueue(session, "build", tenant_id, {**_build_payload(tenant_id), "surprise": 1})
        assert [e["field"] for e in extra.value.errors] == ["surprise"]
        with pytest.raises(queue.InvalidTrigger):
            queue.enqueue(session, "build", None, _build_payload(tenant_id))
        with pytest.raises(queue.InvalidTrigger) as tag:
            queue.enqueue(session, "release", None, {"tag": "../../etc"})
        assert [e["field"] for e in tag.value.errors] == ["tag"]
    assert _count(engine) == 0


def test_live_id_names_the_live_trigger_of_a_dedup_key(engine):
    with transaction(engine) as session:
        trigger = queue.enqueue(session, "release", None, {"tag": "app/v2.0.0"}, dedup_key="release:app/v2.0.0")
        assert queue.live_id(session, "release", "release:app/v2.0.0") == trigger
        assert queue.live_id(session, "release", "release:v9") is None


def test_dedup_key_returns_the_live_trigger_or_refuses_another_payload(engine, tenant_id):
    with transaction(engine) as session:
        first = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id), dedup_key="build:v1")
        assert queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id), dedup_key="build:v1") == first
        with pytest.raises(queue.DedupConflict):
            queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 2), dedup_key="build:v1")
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["build"], 10, 60, "w")
        queue.ack(session, claimed.id, claimed.claim_token)
    with transaction(engine) as session:  # finished: the key is free again
        again = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id), dedup_key="build:v1")
    assert again != first and _count(engine) == 2


def test_claim_gives_fresh_tokens_counts_attempts_and_skips_future_rows(engine, tenant_id):
    with transaction(engine) as session:
        ids = [queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, n)) for n in range(3)]
        queue.enqueue(
            session,
            "build",
            tenant_id,
            _build_payload(tenant_id, 9),
            available_at=datetime.now(UTC) + timedelta(hours=1),
        )
    with transaction(engine) as session:
        claimed = queue.claim(session, ["build"], 10, 60, "w1")
    assert [c.id for c in claimed] == ids
    assert len({c.claim_token for c in claimed}) == 3 and all(c.attempts == 1 for c in claimed)
    with transaction(engine) as session:
        assert queue.claim(session, ["build"], 10, 60, "w2") == []
        assert queue.claim(session, ["phase"], 10, 60, "w2") == []


def test_stale_token_cannot_ack_fail_extend_or_launch(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["build"], 1, 60, "w")
    for call in (
        lambda s: queue.ack(s, row_id, "not-the-token"),
        lambda s: queue.fail(s, row_id, "not-the-token", "x"),
        lambda s: queue.extend(s, row_id, "not-the-token", 60),
        lambda s: queue.launch(s, row_id, "not-the-token", "run-1"),
    ):
        with pytest.raises(queue.StaleClaim), transaction(engine) as session:
            call(session)
    with transaction(engine) as session:
        queue.launch(session, row_id, claimed.claim_token, "run-1")
        queue.ack(session, row_id, claimed.claim_token)
    with pytest.raises(queue.StaleClaim), transaction(engine) as session:  # a second ack is refused
        queue.ack(session, row_id, claimed.claim_token)
    row = _row(engine, row_id)
    assert (row.state, row.run_id, row.claim_token) == ("done", "run-1", None)


def test_a_launch_again_by_the_run_holding_the_row_is_a_no_op_and_the_run_lists_what_it_holds(engine, tenant_id):
    """A step of a run delivered again (Celery acks late) launches its rows again: they are still its own,
    not stale; another run's launch is refused. held_by_run gives the rows the run has not finished."""
    with transaction(engine) as session:
        ids = [queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, n)) for n in range(3)]
    with transaction(engine) as session:
        claimed = queue.claim(session, ["phase"], 3, 60, "w")
        for c in claimed:
            queue.launch(session, c.id, c.claim_token, "run-1")
    launched_at = _row(engine, ids[0]).updated_at
    with transaction(engine) as session:
        for c in claimed:
            queue.launch(session, c.id, c.claim_token, "run-1")  # the same run: held, nothing changes
    assert _row(engine, ids[0]).updated_at == launched_at  # its launch time, for reconciliation's age
    with pytest.raises(queue.StaleClaim), transaction(engine) as session:
        queue.launch(session, claimed[0].id, claimed[0].claim_token, "run-2")
    with transaction(engine) as session:
        queue.ack_many(session, [(claimed[0].id, claimed[0].claim_token)], run_id="run-1")
    with transaction(engine) as session:
        held = queue.held_by_run(session, "phase", "run-1")
        assert queue.held_by_run(session, "phase", "run-2") == queue.held_by_run(session, "build", "run-1") == []
    assert held == claimed[1:]
    assert {(r.state, r.run_id) for r in map(lambda i: _row(engine, i), ids[1:])} == {("launched", "run-1")}


def test_queued_since_reads_the_newest_rows_only(engine, tenant_id, monkeypatch):
    """What keeps the phase workers live (sensors/phases.py): a trigger of the kind queued since the time
    given, among the newest QUEUED_SINCE_SCAN rows: a bounded read, whatever the table's size."""
    from domain.queue import reading

    monkeypatch.setattr(reading, "QUEUED_SINCE_SCAN", 3)
    with transaction(engine) as session:
        assert not queue.queued_since(session, "phase", datetime(2000, 1, 1, tzinfo=UTC))  # none ever
        phase_id = queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, 0))
    with transaction(engine) as session:
        queued_at = session.get(TriggerQueue, phase_id).created_at  # the row's own time: no clock read here
        assert queue.queued_since(session, "phase", queued_at)
        assert not queue.queued_since(session, "phase", queued_at + timedelta(microseconds=1))
        assert not queue.queued_since(session, "build", queued_at)
        for n in range(2):
            queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, n))
    with transaction(engine) as session:
        assert queue.queued_since(session, "phase", queued_at)  # the third newest row
        queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 3))
    with transaction(engine) as session:
        assert not queue.queued_since(session, "phase", queued_at)  # beyond the rows read
        assert queue.queued_since(session, "build", queued_at)


def test_fail_backs_off_then_dies_after_max_attempts(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
    waits = []
    for attempt in (1, 2, 3):
        with transaction(engine) as session:
            [claimed] = queue.claim(session, ["build"], 1, 60, "w")
            assert claimed.attempts == attempt
            state = queue.fail(session, row_id, claimed.claim_token, f"boom {attempt}")
        row = _row(engine, row_id)
        if attempt < 3:
            assert state == "available" and row.state == "available"
            waits.append((row.available_at - row.updated_at).total_seconds())
            with transaction(engine) as session:  # make it due now
                session.execute(
                    update(TriggerQueue).where(TriggerQueue.id == row_id).values(available_at=datetime.now(UTC))
                )
        else:
            assert state == "dead" and row.state == "dead" and row.last_error == "boom 3"
    base = KINDS["build"].backoff_base_s  # doubling, jitter 0.5-1x
    assert base / 2 <= waits[0] <= base and base <= waits[1] <= 2 * base


def test_a_failure_records_the_run_that_failed_even_before_its_launch_was_recorded(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["build"], 1, 60, "w")  # claimed, not yet launched
        assert queue.fail(session, row_id, claimed.claim_token, "boom", retryable=False, run_id="run-1") == "dead"
    row = _row(engine, row_id)
    assert (row.state, row.run_id) == ("dead", "run-1")


def test_permanent_failure_dies_at_once(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["build"], 1, 60, "w")
        assert queue.fail(session, row_id, claimed.claim_token, "bad", retryable=False) == "dead"


def test_extend_renews_and_reap_returns_expired_claims(engine, tenant_id):
    with transaction(engine) as session:
        a = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 1))
        b = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 2))
    with transaction(engine) as session:
        ca, cb = queue.claim(session, ["build"], 2, 0.2, "w")
        # Both leases run out, however long the machine takes to get to the next line; `a` is renewed.
        session.execute(
            update(TriggerQueue)
            .where(TriggerQueue.id.in_([a, b]))
            .values(lease_expires_at=queue.now_utc() - timedelta(seconds=1))
        )
    with transaction(engine) as session:
        queue.extend(session, ca.id, ca.claim_token, 60)
    with transaction(engine) as session:
        reaped = queue.reap(session)
    assert [(r.id, r.state) for r in reaped] == [(b, "available")]
    assert _row(engine, a).state == "claimed"
    with pytest.raises(queue.StaleClaim), transaction(engine) as session:
        queue.ack(session, b, cb.claim_token)  # the worker that lost its lease cannot complete the row
    with transaction(engine) as session:
        [again] = queue.claim(session, ["build"], 5, 60, "w2")
    assert again.id == b and again.attempts == 2 and again.claim_token != cb.claim_token


def test_reap_kills_a_row_without_attempts_left(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "release", None, {"tag": "v1"})
    for _ in range(2):  # release: 2 attempts
        with transaction(engine) as session:
            queue.claim(session, ["release"], 1, 0.05, "w")
        time.sleep(0.1)
        with transaction(engine) as session:
            reaped = queue.reap(session)
    assert [(r.id, r.state) for r in reaped] == [(row_id, "dead")]


def test_prune_deletes_old_finished_rows_only(engine, tenant_id):
    with transaction(engine) as session:
        done = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 1))
        live = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 2))
        dead = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 3))
    with transaction(engine) as session:
        c_done, _, c_dead = queue.claim(session, ["build"], 3, 60, "w")
        queue.ack(session, c_done.id, c_done.claim_token)
        queue.fail(session, c_dead.id, c_dead.claim_token, "x", retryable=False)
    with transaction(engine) as session:
        assert queue.prune(session, timedelta(hours=1)) == 0
        assert queue.prune(session, timedelta(seconds=-1)) == 1
    with transaction(engine) as session:
        remaining = set(session.scalars(select(TriggerQueue.id)))
    assert remaining == {live, dead} and done not in remaining


def test_requeue_revives_a_dead_row_and_cancel_ends_a_live_one(engine, tenant_id):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
    with transaction(engine) as session:
        [c] = queue.claim(session, ["build"], 1, 60, "w")
        queue.fail(session, row_id, c.claim_token, "x", retryable=False)
    with transaction(engine) as session:
        assert queue.requeue(session, row_id)
        assert not queue.requeue(session, row_id)  # only dead rows
    row = _row(engine, row_id)
    assert (row.state, row.attempts) == ("available", 0)
    with transaction(engine) as session:
        assert queue.cancel(session, row_id)
    assert _row(engine, row_id).state == "cancelled"


def test_stats_counts_per_kind_and_state_with_oldest_age(engine, tenant_id):
    with transaction(engine) as session:
        queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 1))
        queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 2))
        queue.enqueue(session, "release", None, {"tag": "v2"})
    with transaction(engine) as session:
        queue.claim(session, ["release"], 1, 60, "w")
        stats = queue.stats(session)
        scoped = queue.stats(session, tenant_ids=["someone-else"])
    assert stats["kinds"]["build"]["states"]["available"] == 2
    assert stats["kinds"]["release"]["states"]["claimed"] == 1
    assert stats["kinds"]["build"]["oldest_available_age_s"] >= 0
    assert scoped["kinds"]["build"]["states"]["available"] == 0  # other tenants' rows are not counted
    assert scoped["kinds"]["release"]["states"]["claimed"] == 1  # platform-wide rows are


def _at_once(threads: int, worker) -> list[Exception]:
    """`worker(n)` in `threads` threads released together; the exceptions they raised."""
    barrier = threading.Barrier(threads)
    errors: list[Exception] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            worker(n)
        except Exception as exc:  # reported to the caller
            errors.append(exc)

    started = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join(60)
    return errors


def test_keyed_triggers_enqueued_together_each_get_their_own_outcome(engine, tenant_id):
    with transaction(engine) as session:
        held = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 1), dedup_key="build:v1")
        held_v6 = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 6), dedup_key="build:v6")
    k = queue.Keyed
    triggers = [
        k(tenant_id, _build_payload(tenant_id, 2), "build:v2"),  # new
        k(tenant_id, _build_payload(tenant_id, 1), "build:v1"),  # live with this payload: that trigger
        k(tenant_id, _build_payload(tenant_id, 9), "build:v1"),  # live with another payload: refused
        k(tenant_id, {**_build_payload(tenant_id, 3), "surprise": 1}, "build:v3"),  # invalid: refused alone
        k(tenant_id, _build_payload(tenant_id, 2), "build:v2"),  # a repeat within the batch: the same row
        k(tenant_id, _build_payload(tenant_id, 8), "build:v2"),  # the same key, another payload: refused
        k(None, _build_payload(tenant_id, 4), "build:v4"),  # no tenant: refused alone
        k(tenant_id, _build_payload(tenant_id, 5), "build:v5"),  # new
        k(tenant_id, _build_payload(tenant_id, 7), "build:v6"),  # live with another payload: refused
        k(tenant_id, _build_payload(tenant_id, 6), "build:v6"),  # ... and its twin's payload: that trigger
    ]
    with autocommit(engine) as connection:
        outcomes = queue.enqueue_keyed(connection, "build", triggers)
    new_v2, twin, conflict, invalid, repeat, conflict_in_batch, tenantless, new_v5, conflict_v6, twin_v6 = outcomes
    assert isinstance(new_v2, int) and isinstance(new_v5, int) and len({held, held_v6, new_v2, new_v5}) == 4
    assert twin == held and repeat == new_v2 and twin_v6 == held_v6
    assert isinstance(conflict_v6, queue.DedupConflict) and conflict_v6.existing_id == held_v6
    assert isinstance(conflict, queue.DedupConflict) and conflict.existing_id == held
    assert isinstance(conflict_in_batch, queue.DedupConflict) and conflict_in_batch.existing_id == new_v2
    assert isinstance(invalid, queue.InvalidTrigger) and [e["field"] for e in invalid.errors] == ["surprise"]
    assert isinstance(tenantless, queue.InvalidTrigger)
    assert _count(engine) == 4
    assert _row(engine, new_v2).payload == _build_payload(tenant_id, 2)
    assert _row(engine, new_v5).dedup_key == "build:v5" and _row(engine, new_v5).state == "available"


def test_keyed_triggers_of_a_tenant_the_store_does_not_know_are_refused_as_unknown_tenant(engine, tenant_id):
    triggers = [queue.Keyed("no-such-tenant", _build_payload("no-such-tenant"), "build:ghost")]
    with pytest.raises(UnknownTenant, match="no-such-tenant"), autocommit(engine) as connection:
        queue.enqueue_keyed(connection, "build", triggers)
    assert _count(engine) == 0
    with autocommit(engine) as connection:
        (known,) = queue.enqueue_keyed(connection, "build", [queue.Keyed(tenant_id, _build_payload(tenant_id), "b")])
    assert isinstance(known, int)


def test_batches_sharing_keys_enqueued_at_once_make_one_row_per_key(engine, tenant_id):
    # Two batches with the same keys in opposite orders, many times at once: no deadlock, one row per key,
    # and every trigger of a key answered with that row.
    keys = [f"build:k{n}" for n in range(20)]
    payloads = {key: _build_payload(tenant_id, n) for n, key in enumerate(keys)}
    results: list[list] = []

    def worker(n: int) -> None:
        ordered = keys if n % 2 else list(reversed(keys))
        with autocommit(engine) as connection:
            triggers = [queue.Keyed(tenant_id, payloads[key], key) for key in ordered]
            results.append(list(zip(ordered, queue.enqueue_keyed(connection, "build", triggers), strict=True)))

    assert _at_once(8, worker) == [] and len(results) == 8
    with transaction(engine) as session:
        rows = {r.dedup_key: r.id for r in session.scalars(select(TriggerQueue))}
    assert sorted(rows) == sorted(keys)
    for outcome in results:
        assert dict(outcome) == rows


def test_concurrent_enqueues_of_one_dedup_key_with_rollbacks_make_one_row(engine, tenant_id):
    payload = _build_payload(tenant_id)
    results = []

    def worker(n: int) -> None:
        try:
            with transaction(engine) as session:
                results.append(queue.enqueue(session, "build", tenant_id, payload, dedup_key="build:race"))
                if n % 3 == 0:
                    raise RuntimeError("roll back")
        except RuntimeError:
            pass

    assert _at_once(64, worker) == []
    with transaction(engine) as session:
        rows = session.scalars(select(TriggerQueue).where(TriggerQueue.dedup_key == "build:race")).all()
    assert len(rows) == 1
    assert rows[0].id in results


def test_dedup_enqueue_keeps_working_once_statements_are_server_side_prepared(engine, tenant_id):
    # psycopg prepares a statement server-side after five uses; the ON CONFLICT must still match the index.
    with transaction(engine) as session:
        ids = [
            queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, n), dedup_key=f"build:p{n}")
            for n in range(12)
        ]
        again = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id, 11), dedup_key="build:p11")
    assert len(set(ids)) == 12 and again == ids[-1]


def _phase(tenant_id: str, n: int) -> dict:
    return {"tenant_id": tenant_id, "user_id": f"u{n}", "sync_id": "s", "phase": 1}


def test_ack_and_claim_acks_the_finished_batch_and_claims_the_next_in_one_transaction(engine, tenant_id):
    with transaction(engine) as session:
        ids = [queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, n)) for n in range(5)]
        first = queue.claim(session, ["phase"], 2, 60, "w")
    held = [(c.id, c.claim_token) for c in first]
    stale = (ids[4], "not-a-token")  # a pair the worker does not hold is not acked
    # A transaction that fails after both moves leaves neither: the ack and the claim are one commit.
    with pytest.raises(RuntimeError), transaction(engine) as session:
        queue.ack_and_claim(session, [*held, stale], ["phase"], 2, 60, "w")
        raise RuntimeError("the worker died before its commit")
    assert [_row(engine, i).state for i in ids] == ["claimed", "claimed", "available", "available", "available"]
    with transaction(engine) as session:
        acked, second = queue.ack_and_claim(session, [*held, stale], ["phase"], 2, 60, "w", run_id="run-1")
    assert acked == set(ids[:2])
    assert [c.id for c in second] == ids[2:4] and all(c.claim_token and c.attempts == 1 for c in second)
    assert second[0].payload == {**_phase(tenant_id, 2), "input": {}}
    rows = [_row(engine, i) for i in ids]
    assert [r.state for r in rows] == ["done", "done", "claimed", "claimed", "available"]
    assert [r.run_id for r in rows[:2]] == ["run-1", "run-1"] and rows[0].claim_token is None
    assert rows[0].finished_at is not None and rows[2].lease_expires_at > rows[2].claimed_at
    with transaction(engine) as session:  # the last step: nothing left to claim
        acked, third = queue.ack_and_claim(session, [(c.id, c.claim_token) for c in second], ["phase"], 2, 60, "w")
    assert acked == set(ids[2:4]) and [c.id for c in third] == [ids[4]]


def test_only_the_ack_and_claim_transaction_skips_the_wal_flush_wait(engine, tenant_id):
    """PostgreSQL: ack_and_claim's commit does not wait for its flush (docs/architecture.md); the
    session's other transactions, enqueue's and a plain ack's, still do."""
    if not is_postgres(engine):
        pytest.skip("synchronous_commit is PostgreSQL's")

    def flush_wait(session) -> str:
        return session.execute(text("SHOW synchronous_commit")).scalar_one()

    with transaction(engine) as session:
        queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, 1))
        queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, 2))
        held = [(c.id, c.claim_token) for c in queue.claim(session, ["phase"], 1, 60, "w")]
        assert flush_wait(session) == "on"
    with transaction(engine) as session:
        acked, claimed = queue.ack_and_claim(session, held, ["phase"], 1, 60, "w")
        assert acked == {held[0][0]} and len(claimed) == 1
        assert flush_wait(session) == "off"
    with transaction(engine) as session:
        assert queue.ack_many(session, [(claimed[0].id, claimed[0].claim_token)]) == {claimed[0].id}
        assert flush_wait(session) == "on"


def test_a_claim_over_several_kinds_takes_the_oldest_due_rows_of_those_kinds(engine, tenant_id):
    with transaction(engine) as session:
        build = queue.enqueue(session, "build", tenant_id, _build_payload(tenant_id))
        phase = queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, 1))
        queue.enqueue(session, "release", None, {"tag": "v1.0.0"})
        claimed = queue.claim(session, ["build", "phase"], 10, 60, "w")
    assert [(c.id, c.kind) for c in claimed] == [(build, "build"), (phase, "phase")]


def test_the_queue_works_on_a_core_connection_as_on_a_session(engine, tenant_id):
    with engine.begin() as connection:
        row_id = queue.enqueue(connection, "phase", tenant_id, _phase(tenant_id, 1), dedup_key="phase:core")
        assert queue.enqueue(connection, "phase", tenant_id, _phase(tenant_id, 1), dedup_key="phase:core") == row_id
        [claimed] = queue.claim(connection, ["phase"], 5, 60, "w")
        queue.launch(connection, claimed.id, claimed.claim_token, "run-9")
        assert queue.fail(connection, claimed.id, claimed.claim_token, "boom", run_id="run-9") is QueueState.AVAILABLE
    row = _row(engine, row_id)
    assert (row.state, row.run_id, row.last_error, row.claim_token) == ("available", "run-9", "boom", None)
    assert row.available_at > row.updated_at  # its backoff


def _positional(sql: str) -> tuple[str, list[str]]:
    """The statement as psycopg prepares it: each `%(name)s` becomes `$n`, in order of first use."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), names


TYPES = {
    "now": "timestamptz",
    "expires": "timestamptz",
    "worker": "text",
    "limit": "int8",
    "kind": "text",
    "run_id": "text",
    "ids": "int8[]",
    "tokens": "text[]",
}


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        ("CLAIM_ONE_KIND_SQL", "ix_trigger_queue_available"),
        ("ACK_SQL", "pk_trigger_queue"),
        ("ACK_AND_CLAIM_ONE_KIND_SQL", "ix_trigger_queue_available"),
        ("HELD_BY_RUN_SQL", "ix_trigger_queue_launched"),
    ],
)
def test_prepared_hot_statements_keep_using_their_indexes_under_a_generic_plan(engine, tenant_id, statement, index):
    """psycopg prepares the queue's statements server-side; PostgreSQL then plans them once for any
    parameters (a generic plan). The live state is a literal in the SQL, so that plan still matches the
    partial index; were it a parameter, the index could not be used and every claim would scan."""
    if not is_postgres(engine):
        pytest.skip("server-side prepared statements are PostgreSQL's")
    with transaction(engine) as session:
        ids = [queue.enqueue(session, "phase", tenant_id, _phase(tenant_id, n)) for n in range(20)]
    text = getattr(statements, statement)
    sql, names = _positional(text if isinstance(text, str) else text[0])  # (PostgreSQL, SQLite) or PostgreSQL's
    now = datetime.now(UTC)
    values = {
        "now": now,
        "expires": now + timedelta(seconds=60),
        "worker": "w",
        "limit": 5,
        "kind": "phase",
        "run_id": None,
        "ids": ids[:3],
        "tokens": ["a", "b", "c"],
    }
    with engine.connect() as connection:
        raw = connection.connection.driver_connection
        raw.execute("SET plan_cache_mode = force_generic_plan")
        raw.execute("SET enable_seqscan = off")  # a seq scan then only when no index can answer
        types = ", ".join(TYPES[n] for n in names)  # the types psycopg sends with its own prepare
        raw.execute(f"PREPARE hot ({types}) AS {sql}")
        placeholders = ", ".join(["%s"] * len(names))
        with psycopg.ClientCursor(raw) as cursor:  # EXECUTE's arguments as literals
            cursor.execute(f"EXPLAIN EXECUTE hot({placeholders})", [values[n] for n in names])
            plan = "\n".join(r[0] for r in cursor.fetchall())
        connection.rollback()
    assert index in plan and "Seq Scan on trigger_queue" not in plan, plan


def test_pruning_finds_finished_rows_through_the_partial_finished_at_index(engine, tenant_id):
    """The finished_at index holds finished rows only (a claim writes no entry into it); pruning's
    `finished_at < cutoff` implies its predicate, so the index still answers it."""
    if not is_postgres(engine):
        pytest.skip("PostgreSQL's planner")
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in connection.exec_driver_sql(
                "EXPLAIN SELECT id FROM trigger_queue WHERE state IN ('done', 'cancelled') "
                "AND finished_at < now() - interval '7 days' LIMIT 1000"
            )
        )
        connection.rollback()
    assert "ix_trigger_queue_finished_at" in plan, plan


def test_an_enqueue_on_an_autocommit_connection_is_committed_when_it_returns(engine, tenant_id):
    """The API's phase endpoint enqueues through store.autocommit: on PostgreSQL the insert is its own
    (fsync'd) transaction, visible to every other connection at once (SQLite: one transaction, as
    before); the same key again returns the same row, and a conflicting body is refused, nothing written."""
    with autocommit(engine) as connection:
        first = queue.enqueue(connection, "phase", tenant_id, _phase(tenant_id, 1), dedup_key="k")
        if is_postgres(engine):
            with engine.connect() as other:
                assert other.execute(select(TriggerQueue.id).where(TriggerQueue.id == first)).scalar_one() == first
        assert queue.enqueue(connection, "phase", tenant_id, _phase(tenant_id, 1), dedup_key="k") == first
        with pytest.raises(queue.DedupConflict):
            queue.enqueue(connection, "phase", tenant_id, _phase(tenant_id, 2), dedup_key="k")
    with engine.connect() as other:
        assert other.execute(select(func.count()).select_from(TriggerQueue)).scalar_one() == 1
