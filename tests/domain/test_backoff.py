"""One backoff formula: the queue's retries, the outbox's re-sends and outbound calls' retries all wait
what domain/core/backoff.py says."""

from datetime import timedelta

import pytest

from domain.core import backoff
from domain.core.models import Notification, NotificationStatus
from domain.core.notifications import deliver_due, ops_alert
from domain.core.store import transaction
from domain.queue import queue
from domain.queue.triggers import KINDS
from resources.retry import RetryPolicy


def test_the_formula_doubles_from_the_base_is_capped_and_jittered_between_half_and_all(monkeypatch):
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    assert [backoff.backoff_seconds(a, 10.0, 100.0) for a in (0, 1, 2, 3, 4, 5)] == [10, 10, 20, 40, 80, 100]
    monkeypatch.setattr("random.uniform", lambda low, high: low)
    assert [backoff.backoff_seconds(a, 10.0, 100.0) for a in (1, 2, 5)] == [5, 10, 50]


def test_real_jitter_stays_within_half_and_all_of_the_curve():
    waits = [backoff.backoff_seconds(3, 1.0, 60.0) for _ in range(200)]
    assert all(2.0 <= w <= 4.0 for w in waits) and len(set(waits)) > 1


@pytest.fixture
def calls(monkeypatch):
    """Every caller of the formula, recorded: (attempt, base, cap); the wait is the curve's top."""
    seen: list[tuple[int, float, float]] = []

    def spy(attempt: int, base_s: float, cap_s: float) -> float:
        seen.append((attempt, base_s, cap_s))
        return 7.0

    monkeypatch.setattr(backoff, "backoff_seconds", spy)
    return seen


def test_the_retry_policy_uses_it(calls):
    assert RetryPolicy(base_delay_s=0.5, max_delay_s=30.0).backoff(3) == 7.0
    assert calls == [(3, 0.5, 30.0)]


def test_the_queue_uses_it(calls, engine):
    with transaction(engine) as session:
        row_id = queue.enqueue(session, "release", None, {"tag": "v1"})
        [claimed] = queue.claim(session, ["release"], 1, 60, "test")
        assert queue.fail(session, row_id, claimed.claim_token, "boom") == "available"
        row = session.execute(queue.Q.select().where(queue.Q.c.id == row_id)).one()
    policy = KINDS["release"]
    assert calls == [(1, policy.backoff_base_s, policy.backoff_max_s)]
    assert row.available_at - row.updated_at == timedelta(seconds=7)  # the formula's wait, from the failure


def test_the_outbox_uses_it(calls, engine):
    def refuse(_row: Notification) -> None:
        raise ConnectionError("smtp down")

    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="s", details="d", dedup_key="k")
    report = deliver_due(engine, refuse, base_delay_s=30.0)
    assert report.failed == 1 and calls == [(1, 30.0, 3600.0)]
    with transaction(engine) as session:
        row = session.query(Notification).one()
    assert row.status == NotificationStatus.PENDING.value
