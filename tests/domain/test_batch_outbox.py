"""The batch-job outbox on both store backends: one row per message id, newest first, the relay's
claim / publish / back-off moves, and one ops alert for messages stuck unpublished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from domain.batch import batch_jobs
from domain.core.models import Notification, OutboundMessage
from domain.core.store import read_transaction, transaction

WINDOW = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))


def _enqueue(engine, job: str, key: str) -> batch_jobs.Enqueued:
    body = batch_jobs.trigger_body(job, key, *WINDOW, run_id="run-1", metadata={})
    with transaction(engine) as session:
        return batch_jobs.enqueue(
            session,
            queue="bi_batch_jobs",
            exchange="",
            message_id=batch_jobs.message_id(job, key),
            body=body,
            headers={"job": job},
        )


def _relay(engine, publish, **kw):
    return batch_jobs.relay_due(
        engine, publish, base_delay_s=0.01, max_delay_s=0.02, ops_email="ops@wrk.test", alert_after_s=3600, **kw
    )


def test_message_id_is_stable_per_job_and_period_and_new_per_reissue():
    first = batch_jobs.message_id("outcome-sync", "2026-03-01-00:00")
    assert first == batch_jobs.message_id("outcome-sync", "2026-03-01-00:00")
    assert first != batch_jobs.message_id("outcome-sync", "2026-03-01-01:00")
    assert first != batch_jobs.message_id("account-health", "2026-03-01-00:00")
    assert first != batch_jobs.message_id("outcome-sync", "2026-03-01-00:00", reissue="INC-42")


def test_enqueue_twice_keeps_one_row_and_reports_the_repeat(engine):
    first = _enqueue(engine, "outcome-sync", "2026-03-01-00:00")
    again = _enqueue(engine, "outcome-sync", "2026-03-01-00:00")
    assert first.new and not again.new
    assert again.message_id == first.message_id and again.created_at == first.created_at
    with read_transaction(engine) as session:
        rows = session.scalars(select(OutboundMessage)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.queue, row.type, row.job, row.status) == (
        "bi_batch_jobs",
        "workflow.job.trigger",
        "outcome-sync",
        "pending",
    )
    assert row.body["window_start"] == "2026-03-01T00:00:00Z" and row.body["scheduled_for"] == "2026-03-02T00:00:00Z"


def test_latest_is_newest_first_and_filters_by_job(engine):
    for key in ("2026-03-01-00:00", "2026-03-01-01:00", "2026-03-01-02:00"):
        _enqueue(engine, "outcome-sync", key)
    _enqueue(engine, "propagation", "2026-03-01-00:30")
    with read_transaction(engine) as session:
        all_jobs = [(m.job, m.body["partition_key"]) for m in batch_jobs.latest(session)]
        only = [m.body["partition_key"] for m in batch_jobs.latest(session, job="outcome-sync", limit=2)]
    assert all_jobs[0] == ("propagation", "2026-03-01-00:30")
    assert only == ["2026-03-01-02:00", "2026-03-01-01:00"]


def test_relay_publishes_in_order_and_marks_published_once(engine):
    keys = [f"2026-03-0{day}-00:00" for day in range(1, 5)]
    for key in keys:
        _enqueue(engine, "risk-snapshot-backfill", key)
    sent: list[str] = []
    report = _relay(engine, lambda m: sent.append(m.body["partition_key"]))
    assert sent == keys and report.published == 4 and report.failed == 0
    assert _relay(engine, lambda m: sent.append(m.body["partition_key"])).published == 0
    assert sent == keys
    with read_transaction(engine) as session:
        rows = session.scalars(select(OutboundMessage)).all()
    assert all(r.status == "published" and r.published_at is not None and r.attempts == 1 for r in rows)


def test_broker_failure_backs_off_the_rest_and_keeps_order_for_the_next_pass(engine):
    keys = [f"2026-03-0{day}-00:00" for day in range(1, 5)]
    for key in keys:
        _enqueue(engine, "risk-snapshot-backfill", key)
    sent: list[str] = []

    def flaky(message):
        if len(sent) == 2:
            raise ConnectionError("broker down")
        sent.append(message.body["partition_key"])

    before = datetime.now(UTC)
    report = _relay(engine, flaky)
    assert (report.published, report.failed) == (2, 2)
    with read_transaction(engine) as session:
        pending = session.scalars(select(OutboundMessage).where(OutboundMessage.status == "pending")).all()
    assert len(pending) == 2 and all("broker down" in (r.last_error or "") for r in pending)
    assert all(r.next_attempt_at > before for r in pending)  # backed off past the pass that failed
    with transaction(engine) as session:  # the backoff has passed
        session.execute(update(OutboundMessage).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    report = _relay(engine, lambda m: sent.append(m.body["partition_key"]))
    assert report.published == 2 and sent == keys


def test_a_run_relays_only_its_own_messages_and_leaves_others_due(engine):
    _enqueue(engine, "outcome-sync", "2026-03-01-00:00")
    mine = _enqueue(engine, "outcome-sync", "2026-03-01-01:00")
    sent: list[str] = []
    _relay(engine, lambda m: sent.append(m.message_id), message_ids=[mine.message_id])
    assert sent == [mine.message_id]
    with read_transaction(engine) as session:
        other = session.scalars(select(OutboundMessage).where(OutboundMessage.status == "pending")).one()
        assert other.attempts == 0 and batch_jobs.due_count(session) == 1


def test_one_ops_alert_for_messages_stuck_unpublished(engine):
    for key in ("2026-03-01-00:00", "2026-03-01-01:00"):
        _enqueue(engine, "outcome-sync", key)
    with transaction(engine) as session:
        session.execute(update(OutboundMessage).values(created_at=datetime.now(UTC) - timedelta(hours=2)))

    def down(_message):
        raise ConnectionError("refused")

    for _ in range(3):
        with transaction(engine) as session:
            session.execute(update(OutboundMessage).values(next_attempt_at=datetime.now(UTC)))
        batch_jobs.relay_due(
            engine, down, base_delay_s=0.01, max_delay_s=0.02, ops_email="ops@wrk.test", alert_after_s=900
        )
    with read_transaction(engine) as session:
        alerts = session.scalars(select(Notification).where(Notification.template == "ops_alert")).all()
        rows = session.scalars(select(OutboundMessage)).all()
    assert len(alerts) == 1
    assert "2 batch-job message(s) unpublished" in alerts[0].payload["summary"]
    assert all(r.status == "pending" and r.alerted_at is not None for r in rows)
