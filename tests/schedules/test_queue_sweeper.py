"""The queue_sweeper job, run in process against a store: it records the runs of claimed rows, rescues
claims whose lease expired without a run, and prunes finished rows past their retention only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import select, update

from domain.batch import batch_jobs
from domain.core.models import Notification, OutboundMessage, TriggerQueue
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from orchestration_defs.build import build_automation_version
from orchestration_defs.housekeeping import queue_sweeper
from orchestration_defs.tags import TAG_ID, TAG_TOKEN
from resources.dagster_resources import DatabaseResource
from schedules.housekeeping import queue_sweeper_schedule
from tests.domain import factories


def _payload(tenant_id: str, n: int) -> dict[str, str]:
    return {
        "tenant_id": tenant_id,
        "project_id": f"p{n}",
        "automation_version_id": f"v{n}",
        "workflow_binding_id": f"b{n}",
    }


def _row(engine, row_id: int) -> TriggerQueue | None:
    with transaction(engine) as session:
        return session.get(TriggerQueue, row_id)


def test_the_sweeper_records_launches_rescues_expired_claims_and_prunes_old_rows(engine, database_url, instance):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        ids = [queue.enqueue(session, "build", tenant, _payload(tenant, n), dedup_key=f"build:v{n}") for n in range(4)]
    launched_id, expired_id, old_done_id, new_done_id = ids
    with transaction(engine) as session:
        claimed = {c.id: c for c in queue.claim(session, ["build"], 4, 60, "sensor")}
    # a claim whose run exists: the sweeper records the run (it must not be rescued)
    config = {"config": _payload(tenant, 0)}
    run = instance.create_run_for_job(
        build_automation_version,
        run_config={"ops": {"load": config, "create": config}},
        tags={TAG_ID: str(launched_id), TAG_TOKEN: claimed[launched_id].claim_token},
        status=dg.DagsterRunStatus.STARTED,
    )
    with transaction(engine) as session:
        # a claim whose lease ran out with no run: the sweeper rescues it
        session.execute(
            update(TriggerQueue)
            .where(TriggerQueue.id == expired_id)
            .values(lease_expires_at=queue.now_utc() - timedelta(minutes=1))
        )
        for row_id in (old_done_id, new_done_id):
            queue.ack(session, row_id, claimed[row_id].claim_token)
        # finished 8 days ago: past the 7-day retention
        session.execute(
            update(TriggerQueue)
            .where(TriggerQueue.id == old_done_id)
            .values(finished_at=queue.now_utc() - timedelta(days=8))
        )

    result = queue_sweeper.execute_in_process(
        instance=instance, resources={"database": DatabaseResource(url=database_url)}
    )

    assert result.success
    summary = result.output_for_node("sweep_queue")
    assert (summary["launched"], summary["reaped"], summary["pruned"]) == (1, 1, 1)
    launched = _row(engine, launched_id)
    assert launched.state == "launched" and launched.run_id == run.run_id
    rescued = _row(engine, expired_id)
    assert rescued.state == "available" and rescued.claim_token is None
    assert _row(engine, old_done_id) is None
    assert _row(engine, new_done_id).state == "done"


def test_the_sweeper_schedule_targets_the_sweeper_and_runs_by_default():
    assert queue_sweeper_schedule.job_name == queue_sweeper.name
    assert queue_sweeper_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context()
    [request] = queue_sweeper_schedule.evaluate_tick(context).run_requests
    assert isinstance(request, dg.RunRequest)


@pytest.mark.parametrize("transport", ["outbox", "rabbitmq"])
def test_the_sweeper_alerts_once_on_batch_messages_left_unpublished_whatever_the_transport(
    engine, database_url, instance, monkeypatch, transport
):
    # The relay (the only alert before) runs only with a broker, and only when it can start: a message
    # left pending (a broker since removed, or one whose relay never runs) must still reach ops.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BATCH_TRANSPORT", transport)
    monkeypatch.setenv("RABBITMQ_URL", "amqp://wrk:pw@127.0.0.1:1/%2F")
    get_settings.cache_clear()
    try:
        with transaction(engine) as session:
            batch_jobs.enqueue(session, queue="bi_batch_jobs", exchange="", message_id="left-behind", body={"job": "x"})
            session.execute(update(OutboundMessage).values(created_at=datetime.now(UTC) - timedelta(hours=2)))
        resources = {"database": DatabaseResource(url=database_url)}
        for _ in range(2):
            result = queue_sweeper.execute_in_process(instance=instance, resources=resources)
            assert result.success
    finally:
        get_settings.cache_clear()
    with transaction(engine) as session:
        alerts = session.scalars(select(Notification).where(Notification.template == "ops_alert")).all()
    assert len(alerts) == 1 and "1 batch-job message(s) unpublished" in alerts[0].payload["summary"]
