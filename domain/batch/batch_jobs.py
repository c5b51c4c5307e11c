"""Batch jobs: the seven jobs of the workflow orchestrator's scheduler, the `workflow.job.trigger`
message each period publishes, and the outbox that carries it to the `bi_batch_jobs` queue.

A period's message goes into `outbound_messages` in one transaction (the transactional outbox). With the
outbox as the transport (BATCH_TRANSPORT=outbox), it is published there, in that transaction: consumers
and ops read it (`GET /v1/batch-jobs/messages`). With RabbitMQ, a relay claims due rows (committed),
publishes them with no transaction open, and
records each result in a transaction of its own: published (pending -> published, never back), or backed
off with the one backoff formula. Publishing is at least once; a message keeps its `message_id` every
time, and consumers dedupe on it.

`message_id` is uuid5(job, partition key): a step retry, a run re-executed from failure and a deliberate
re-materialization of the same period all find the same row and publish nothing new (a period is
triggered once). To trigger a period again on purpose, launch the run with the tag
`wrk/batch_reissue=<anything new>`: the value joins the id, so a new message goes out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.core import backoff, counters, notifications, outbox
from domain.core.models import OutboundMessage, OutboundMessageStatus
from domain.core.store import is_postgres, transaction

TRIGGER_TYPE = "workflow.job.trigger"
REISSUE_TAG = "wrk/batch_reissue"
# Fixed forever: changing it changes every message id, and consumers would take old periods as new.
MESSAGE_NAMESPACE = uuid.UUID("6f1c3c2e-8d0a-5b7e-9a53-2f1e0b6d4c11")


@dataclass(frozen=True)
class BatchJob:
    name: str  # the seed's hyphenated name, as consumers know it (`job` in the message)
    description: str

    @property
    def asset_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def job_name(self) -> str:
        """The Dagster asset job that materializes it (orchestration_defs/batch_jobs.py)."""
        return f"{self.asset_name}_job"

    @property
    def cron_setting(self) -> str:
        """The Settings field holding its cron; the environment variable is its upper case."""
        return f"batch_{self.asset_name}_cron"

    @property
    def cron_variable(self) -> str:
        return self.cron_setting.upper()


JOBS: tuple[BatchJob, ...] = (
    BatchJob("risk-snapshot-backfill", "Backfill risk snapshots for the period"),
    BatchJob("outcome-sync", "Sync opportunity outcomes for the period"),
    BatchJob("industry-benchmarks", "Recompute industry benchmarks for the period"),
    BatchJob("risk-clustering", "Re-cluster risk profiles for the period"),
    BatchJob("account-health", "Score account health for the period"),
    BatchJob("propagation", "Propagate risk across related accounts for the period"),
    BatchJob("model-monitoring", "Monitor the models' drift and quality for the period"),
)
JOBS_BY_NAME = {job.name: job for job in JOBS}


def message_id(job: str, partition_key: str, reissue: str | None = None) -> str:
    """The same id for the same period of the same job (and the same reissue tag, if any)."""
    name = f"{job}\n{partition_key}" + (f"\n{reissue}" if reissue else "")
    return str(uuid.uuid5(MESSAGE_NAMESPACE, name))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def trigger_body(
    job: str,
    partition_key: str,
    window_start: datetime,
    window_end: datetime,
    *,
    run_id: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The `workflow.job.trigger` body. `scheduled_for` is the cron tick that closes the period (the
    window's end): when node-cron would have fired for it, whether the run came from the schedule, a
    backfill or a person."""
    return {
        "job": job,
        "partition_key": partition_key,
        "window_start": _iso(window_start),
        "window_end": _iso(window_end),
        "scheduled_for": _iso(window_end),
        "run_id": run_id,
        "metadata": metadata,
    }


@dataclass(frozen=True)
class Enqueued:
    message_id: str
    queue: str
    created_at: datetime
    published_at: datetime | None
    new: bool  # False: the period's message was already there (a retry or a re-materialization)


def enqueue(
    session: Session,
    *,
    queue: str,
    exchange: str,
    message_id: str,
    body: dict[str, Any],
    headers: dict[str, Any] | None = None,
    type: str = TRIGGER_TYPE,
    published: bool = False,
) -> Enqueued:
    """Add one message to the outbox in the caller's transaction; an id already there is left as it is.
    `published`: the outbox is the transport, the message is delivered with this commit (else it is
    pending until the relay publishes it)."""
    now = datetime.now(UTC)
    status = OutboundMessageStatus.PUBLISHED if published else OutboundMessageStatus.PENDING
    insert = pg_insert if is_postgres(session) else sqlite_insert
    statement = (
        insert(OutboundMessage)
        .values(
            queue=queue,
            exchange=exchange,
            message_id=message_id,
            type=type,
            job=str(body.get("job", "")),
            body=body,
            headers=dict(headers or {}),
            status=status.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            published_at=now if published else None,
        )
        .on_conflict_do_nothing(index_elements=["message_id"])
        .returning(OutboundMessage.id)
    )
    new = session.execute(statement).scalar_one_or_none() is not None
    if new and published:
        counters.count(session, "batch_messages_published", {"job": str(body.get("job", ""))})
    row = session.scalars(select(OutboundMessage).where(OutboundMessage.message_id == message_id)).one()
    return Enqueued(row.message_id, row.queue, row.created_at, row.published_at, new)


def latest(session: Session, *, job: str | None = None, limit: int = 50) -> list[OutboundMessage]:
    """The newest messages first (ids grow with inserts, so ties in created_at keep their order)."""
    query = select(OutboundMessage).order_by(OutboundMessage.id.desc()).limit(limit)
    if job:
        query = query.where(OutboundMessage.job == job)
    return list(session.scalars(query).all())


# ---------------------------------------------------------------------------------------------------
# The relay (BATCH_TRANSPORT=rabbitmq)

# How long a claimed row is hidden from another relay: one that dies between claim and record leaves the
# row pending, due again when the claim lapses (and published again, with the same id).
CLAIM_S = 120.0

Publish = Callable[[OutboundMessage], None]


@dataclass(frozen=True)
class RelayReport:
    published: int
    failed: int
    alerted: int
    published_ids: tuple[str, ...] = ()  # the message ids this pass published, in order


def claim_due(
    session: Session,
    *,
    limit: int = 500,
    claim_s: float = CLAIM_S,
    message_ids: Sequence[str] | None = None,
) -> list[OutboundMessage]:
    """Claim due pending rows (of `message_ids` only, when given), oldest first, in the caller's short
    transaction: count the attempt (the intent, before the broker is called) and hide the row for
    `claim_s`. Returns detached copies."""
    now = datetime.now(UTC)
    query = (
        select(OutboundMessage)
        .where(
            OutboundMessage.status == OutboundMessageStatus.PENDING.value,
            OutboundMessage.next_attempt_at <= now,
        )
        .order_by(OutboundMessage.id)
        .limit(limit)
    )
    if message_ids is not None:
        query = query.where(OutboundMessage.message_id.in_(list(message_ids)))
    return outbox.claim(session, query, now=now, claim_s=claim_s)


def record_result(
    session: Session, claimed: OutboundMessage, error: Exception | None, *, base_delay_s: float, max_delay_s: float
) -> bool | None:
    """Published (True), backed off (False), or None when the row is no longer the claimed pending row."""
    row = session.get(OutboundMessage, claimed.id, with_for_update=is_postgres(session))
    if row is None or row.status != OutboundMessageStatus.PENDING.value or row.attempts != claimed.attempts:
        return None
    now = datetime.now(UTC)
    if error is None:
        row.status = OutboundMessageStatus.PUBLISHED.value
        row.published_at = now
        row.last_error = None
        counters.count(session, "batch_messages_published", {"job": row.job})
        return True
    row.last_error = f"{type(error).__name__}: {error}"[:2000]
    row.next_attempt_at = now + timedelta(seconds=backoff.backoff_seconds(row.attempts, base_delay_s, max_delay_s))
    return False


def alert_stuck(session: Session, ops_email: str, *, older_than_s: float) -> int:
    """One ops alert for the messages unpublished longer than `older_than_s` that no alert covered yet;
    marks them alerted. Returns how many the alert covers (0: no alert). The sweeper calls it whatever the
    transport (a relay that never runs must not leave them unnoticed)."""
    now = datetime.now(UTC)
    stuck = list(
        session.scalars(
            select(OutboundMessage)
            .where(
                OutboundMessage.status == OutboundMessageStatus.PENDING.value,
                OutboundMessage.created_at <= now - timedelta(seconds=older_than_s),
                OutboundMessage.alerted_at.is_(None),
            )
            .order_by(OutboundMessage.id)
        ).all()
    )
    if not stuck:
        return 0
    oldest = stuck[0]
    notifications.ops_alert(
        session,
        ops_email,
        summary=f"{len(stuck)} batch-job message(s) unpublished for over {older_than_s:.0f} s",
        details=(
            f"Queue {oldest.queue}; oldest {oldest.message_id} ({oldest.job}, created {_iso(oldest.created_at)}); "
            f"last error: {oldest.last_error or 'none'}. They stay in outbound_messages; the relay publishes "
            "them while BATCH_TRANSPORT is rabbitmq: check BATCH_TRANSPORT, RABBITMQ_URL and the broker."
        ),
        dedup_key=f"batch_outbox_stuck:{oldest.message_id}",
    )
    session.execute(
        update(OutboundMessage).where(OutboundMessage.id.in_([row.id for row in stuck])).values(alerted_at=now)
    )
    return len(stuck)


def relay_due(
    engine: Engine,
    publish: Publish,
    *,
    base_delay_s: float,
    max_delay_s: float,
    ops_email: str,
    alert_after_s: float,
    message_ids: Sequence[str] | None = None,
    limit: int = 500,
) -> RelayReport:
    """Publish due outbox rows in order: claim and commit, publish each with no transaction open, record
    each result in its own transaction. After the first failure the rest of the claim is not tried (the
    broker is down or refusing): they are backed off with the same error, and order is kept for the next
    pass. `message_ids` limits the pass to those rows (a run publishing its own messages)."""
    with transaction(engine) as session:
        claimed = claim_due(session, limit=limit, message_ids=message_ids)
    published = failed = 0
    published_ids: list[str] = []
    error: Exception | None = None
    for row in claimed:
        if error is None:
            try:
                publish(row)
            except Exception as exc:
                error = exc
                outcome_error: Exception | None = exc
            else:
                outcome_error = None
        else:
            outcome_error = error
        with transaction(engine) as session:
            outcome = record_result(session, row, outcome_error, base_delay_s=base_delay_s, max_delay_s=max_delay_s)
        published += outcome is True
        failed += outcome is False
        if outcome is True:
            published_ids.append(row.message_id)
    alerted = 0
    if failed or message_ids is None:
        with transaction(engine) as session:
            alerted = alert_stuck(session, ops_email, older_than_s=alert_after_s)
    return RelayReport(published=published, failed=failed, alerted=alerted, published_ids=tuple(published_ids))


def due_count(session: Session) -> int:
    now = datetime.now(UTC)
    count = session.scalar(
        select(func.count())
        .select_from(OutboundMessage)
        .where(OutboundMessage.status == OutboundMessageStatus.PENDING.value, OutboundMessage.next_attempt_at <= now)
    )
    return int(count or 0)


# ---------------------------------------------------------------------------------------------------
# Health: is every period's message out? (the batch assets' `message_published` check)


@dataclass(frozen=True)
class PublishCheck:
    """Whether every message of one job has left through its transport (published in the outbox, or
    confirmed by the broker). `severe`: a message has waited longer than the ops alert threshold."""

    job: str
    passed: bool
    severe: bool
    description: str
    metadata: dict[str, Any]


def publish_check(session: Session, job: str, *, alert_after_s: float) -> PublishCheck:
    """The job's oldest pending message says why it fails; else its newest published one says it passes."""
    pending = list(
        session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.job == job, OutboundMessage.status == OutboundMessageStatus.PENDING.value)
            .order_by(OutboundMessage.id)
        ).all()
    )
    if pending:
        oldest = pending[0]
        waited_s = (datetime.now(UTC) - oldest.created_at).total_seconds()
        return PublishCheck(
            job,
            passed=False,
            severe=waited_s >= alert_after_s,
            description=(
                f"{len(pending)} message(s) of {job} not published; the oldest, for period "
                f"{oldest.body.get('partition_key')}, has waited {waited_s:.0f} s "
                f"(attempts {oldest.attempts}, last error: {oldest.last_error or 'none'})"
            ),
            metadata={
                "pending": len(pending),
                "oldest_message_id": oldest.message_id,
                "oldest_partition_key": str(oldest.body.get("partition_key")),
                "oldest_enqueued_at": _iso(oldest.created_at),
                "oldest_waited_s": round(waited_s, 1),
                "attempts": oldest.attempts,
                "last_error": oldest.last_error or "none",
                "next_attempt_at": _iso(oldest.next_attempt_at),
                "alert_after_s": alert_after_s,
            },
        )
    latest = session.scalars(
        select(OutboundMessage).where(OutboundMessage.job == job).order_by(OutboundMessage.id.desc()).limit(1)
    ).first()
    if latest is None:
        return PublishCheck(job, passed=True, severe=False, description=f"no message of {job} yet", metadata={})
    return PublishCheck(
        job,
        passed=True,
        severe=False,
        description=f"every message of {job} published; the newest, for period "
        f"{latest.body.get('partition_key')}, at {_iso(latest.published_at or latest.created_at)}",
        metadata={
            "pending": 0,
            "latest_message_id": latest.message_id,
            "latest_partition_key": str(latest.body.get("partition_key")),
            "latest_published_at": _iso(latest.published_at or latest.created_at),
        },
    )
