"""Every flow's figures on /metrics: each flow driven through the functions its jobs and routes call,
then scraped; then the rows housekeeping prunes (and more: the flows' own rows and audit rows) are
deleted, and no counter goes back (Prometheus would read that as a reset). Deploys are in
tests/api/test_deploy_saga.py (they need the sandbox's platform)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from domain.batch import batch_jobs
from domain.build import build
from domain.core import housekeeping, models, notifications
from domain.core.lifecycle import Actor
from domain.core.store import transaction
from domain.queue import queue
from domain.queue.triggers import BuildTrigger
from domain.release import release as rel
from domain.workflows import approvals, workflow_engine
from domain.workflows.workflow_engine import CallResult
from tests.api.test_metrics import assert_none_went_back, scrape, value
from tests.domain import factories
from tests.domain.test_approvals import SETTINGS, member
from tests.orchestration_defs.workflow_helpers import call, new_workflow, start


def prune(engine, *tables: type[models.Base]) -> None:
    """What housekeeping prunes, every audit row, and the given tables' rows."""
    with transaction(engine) as session:
        queue.prune(session, timedelta(0))
        housekeeping.prune_idempotency_keys(session, timedelta(0))
        session.execute(delete(models.AuditLog))
        for table in tables:
            session.execute(delete(table))


def test_builds_requested_succeeded_failed_and_their_duration(engine):
    def requested() -> BuildTrigger:
        with transaction(engine) as session:
            tenant = factories.tenant(session)
            version = factories.version(session, factories.project(session, tenant.id))
            row_id = build.request_build(session, version, Actor.user("ops-1"))
            return BuildTrigger.model_validate(session.get(models.TriggerQueue, row_id).payload)

    built, rejected = requested(), requested()
    with transaction(engine) as session:
        assert build.record_build(session, build.load_target(session, built), "wf-1", "https://wrk/wf-1") == "recorded"
    with transaction(engine) as session:
        build.reject(session, rejected, build.BuildRejected("invalid_blueprint", "no steps"), "ops@wrk.test")
    found = scrape(engine)
    assert value(found, "wrk_builds_total", outcome="requested") == 2
    assert value(found, "wrk_builds_total", outcome="succeeded") == 1
    assert value(found, "wrk_builds_total", outcome="failed") == 1
    assert value(found, "wrk_build_duration_seconds_count") == 2
    assert value(found, "wrk_build_duration_seconds_bucket", le="+Inf") == 2

    with transaction(engine) as session:  # the queue's row done, then pruned with every audit row
        for claimed in queue.claim(session, ["build"], 10, 60, "tests"):
            queue.ack(session, claimed.id, claimed.claim_token)
    prune(engine)
    after = scrape(engine)
    assert value(after, "wrk_queue_depth", kind="build", state="done") == 0
    assert_none_went_back(found, after)


def test_releases_and_their_repository_builds_by_outcome_and_duration(engine, tmp_path):
    artifact = tmp_path / "a.tar.gz"
    artifact.write_bytes(b"built")
    with transaction(engine) as session:
        published = rel.start_release(session, "v1.0.0", None, False, ["a", "b"], "run-1")
    for repository in ("a", "b"):
        with transaction(engine) as session:
            rel.begin_attempt(session, published, repository, attempt=1, correlation_id="c", github_run_id="1")
            rel.record_success(session, published, repository, conclusion="success", url=None, artifacts=[artifact])
    with transaction(engine) as session:
        rel.finish_release(session, published)
        failed = rel.start_release(session, "v2.0.0", None, False, ["a", "b"], "run-2")
    with transaction(engine) as session:
        rel.begin_attempt(session, failed, "a", attempt=1, correlation_id="c", github_run_id="2")
        rel.fail_repository(session, failed, "a", "the build failed", dependents=["b"])
    found = scrape(engine)
    assert value(found, "wrk_releases_total", outcome="succeeded") == 1
    assert value(found, "wrk_releases_total", outcome="failed") == 1
    assert value(found, "wrk_release_repository_builds_total", repository="a", outcome="succeeded") == 1
    assert value(found, "wrk_release_repository_builds_total", repository="b", outcome="succeeded") == 1
    assert value(found, "wrk_release_repository_builds_total", repository="a", outcome="failed") == 1
    assert ("wrk_release_repository_builds_total", (("outcome", "failed"), ("repository", "b"))) not in found
    assert value(found, "wrk_release_duration_seconds_count") == 2

    prune(engine, models.RepoBuild, models.ReleaseBuild)
    assert_none_went_back(found, scrape(engine))


def test_workflow_executions_by_status_finished_and_step_retries(engine):
    def answered(_call: workflow_engine.ServiceCall) -> CallResult:
        return CallResult(output={"ok": True}, attempts=3)  # two retries before the answer

    def refused(_call: workflow_engine.ServiceCall) -> CallResult:
        return CallResult(output=None, attempts=1, error="400 Bad Request")

    tenant, workflow = new_workflow(engine, [call("score")])
    succeeded = start(engine, tenant, workflow)
    failed = start(engine, tenant, workflow, {"account_id": "acc-2"})
    queued = start(engine, tenant, workflow, {"account_id": "acc-3"})
    assert workflow_engine.run(engine, succeeded, call=answered) == "succeeded"
    assert workflow_engine.run(engine, failed, call=refused) == "failed"
    found = scrape(engine)
    assert value(found, "wrk_workflow_executions", status="succeeded") == 1
    assert value(found, "wrk_workflow_executions", status="failed") == 1
    assert value(found, "wrk_workflow_executions", status="queued") == 1
    assert value(found, "wrk_workflow_executions", status="waiting_approval") == 0
    assert value(found, "wrk_workflow_executions_finished_total", status="succeeded") == 1
    assert value(found, "wrk_workflow_executions_finished_total", status="failed") == 1
    assert value(found, "wrk_workflow_executions_finished_total", status="cancelled") == 0
    assert value(found, "wrk_workflow_step_retries_total") == 2
    assert queued

    prune(engine, models.WorkflowExecutionStep, models.WorkflowExecution)
    after = scrape(engine)
    assert value(after, "wrk_workflow_executions", status="succeeded") == 0  # a gauge: rows now
    assert_none_went_back(found, after)


def test_approvals_requested_decided_expired_pending_and_expiring_soon(engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        alice = member(session, tenant, ["approver"], "alice").id

    def opened(step: str, timeout: timedelta) -> models.HitlApproval:
        with transaction(engine) as session:
            execution = factories.workflow_execution(session, tenant)
            row = approvals.open_approval(
                session,
                tenant_id=tenant,
                requested_by="workflow_engine",
                assignees=["role:approver"],
                message="Ship it?",
                timeout=timeout,
                on_timeout="reject",
                workflow_execution_id=execution.id,
                step_name=step,
                settings=SETTINGS,
            )
            session.expunge(row)
            return row

    decided = opened("decided", timedelta(hours=5))
    expired = opened("expired", timedelta(minutes=10))
    opened("soon", timedelta(minutes=30))  # within the default warning (APPROVAL_EXPIRY_WARNING_SECONDS 3600)
    opened("later", timedelta(hours=5))
    with transaction(engine) as session:
        assert approvals.decide(
            session, tenant_id=tenant, approval_id=decided.id, decision="approve", user_id=alice, roles=["approver"]
        )
    with transaction(engine) as session:
        [gone] = approvals.expire_overdue(session, now=expired.expires_at)
        assert gone.id == expired.id
    found = scrape(engine)
    assert value(found, "wrk_approvals_total", event="requested") == 4
    assert value(found, "wrk_approvals_total", event="decided") == 1
    assert value(found, "wrk_approvals_total", event="expired") == 1
    assert value(found, "wrk_approvals_pending") == 2
    assert value(found, "wrk_approvals_expiring_soon") == 1
    assert value(found, "wrk_approval_decision_seconds_count") == 1
    assert value(found, "wrk_approval_decision_seconds_bucket", le="60.0") == 1  # decided at once

    prune(engine)
    assert_none_went_back(found, scrape(engine))


def test_batch_messages_published_pending_and_the_age_of_the_oldest(engine):
    def message(job: str, period: str, published: bool) -> None:
        with transaction(engine) as session:
            batch_jobs.enqueue(
                session,
                queue="bi_batch_jobs",
                exchange="",
                message_id=batch_jobs.message_id(job, period),
                body={"job": job, "period": period},
                published=published,
            )

    message("outcome-sync", "2026-12-01", published=True)  # the outbox is the transport
    message("account-health", "2026-12-01", published=False)  # left to the relay
    message("account-health", "2026-12-02", published=False)
    found = scrape(engine)
    assert value(found, "wrk_batch_messages_published_total", job="outcome-sync") == 1
    assert value(found, "wrk_batch_messages_published_total", job="account-health") == 0
    assert value(found, "wrk_batch_messages_pending", job="account-health") == 2
    assert value(found, "wrk_batch_messages_pending", job="outcome-sync") == 0
    assert value(found, "wrk_batch_oldest_pending_age_seconds", job="account-health") >= 0
    assert value(found, "wrk_batch_oldest_pending_age_seconds", job="outcome-sync") == 0

    with transaction(engine) as session:  # the relay publishes them
        for claimed in batch_jobs.claim_due(session):
            assert batch_jobs.record_result(session, claimed, None, base_delay_s=1, max_delay_s=1) is True
    published = scrape(engine)
    assert value(published, "wrk_batch_messages_published_total", job="account-health") == 2
    assert value(published, "wrk_batch_messages_pending", job="account-health") == 0

    prune(engine, models.OutboundMessage)
    assert_none_went_back(published, scrape(engine))


def test_notifications_and_callbacks_pending_and_dead(engine):
    found = scrape(engine)
    for channel in ("notification", "callback"):
        for state in ("pending", "dead"):
            assert value(found, "wrk_outbox_messages", channel=channel, state=state) == 0
        assert value(found, "wrk_outbox_oldest_pending_age_seconds", channel=channel) == 0
    with transaction(engine) as session:
        for n in range(3):
            notifications.ops_alert(session, "ops@wrk.test", summary=f"alert {n}", details="d", dedup_key=f"a{n}")
    with transaction(engine) as session:
        first = session.scalars(select(models.Notification.id).order_by(models.Notification.id)).first()
        session.execute(update(models.Notification).where(models.Notification.id == first).values(status="dead"))
    found = scrape(engine)
    assert value(found, "wrk_outbox_messages", channel="notification", state="pending") == 2
    assert value(found, "wrk_outbox_messages", channel="notification", state="dead") == 1
    assert value(found, "wrk_outbox_oldest_pending_age_seconds", channel="notification") >= 0


def test_dead_triggers_by_kind_never_go_back_when_the_rows_are_requeued_and_pruned(engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        payloads = [factories.build_trigger(session, tenant, built=False) for _ in range(2)]
        for payload in payloads:
            queue.enqueue(session, "build", tenant, payload)
    with transaction(engine) as session:
        first, second = queue.claim(session, ["build"], 10, 60, "tests")
        assert queue.fail(session, first.id, first.claim_token, "no such blueprint", retryable=False) == "dead"
        queue.launch(session, second.id, second.claim_token, "run-gone")
    with transaction(engine) as session:  # its run was deleted, on its last attempt
        session.execute(update(models.TriggerQueue).values(max_attempts=1).where(models.TriggerQueue.id == second.id))
        assert queue.release_lost(session, second.id, second.claim_token, "run deleted") == "dead"
    found = scrape(engine)
    assert value(found, "wrk_triggers_dead_total", kind="build") == 2
    assert value(found, "wrk_triggers_dead_total", kind="phase") == 0
    assert value(found, "wrk_queue_depth", kind="build", state="dead") == 2

    with transaction(engine) as session:  # requeued, done, pruned: the rows are gone, the count stays
        assert queue.requeue(session, first.id) and queue.requeue(session, second.id)
        for claimed in queue.claim(session, ["build"], 10, 60, "tests"):
            queue.ack(session, claimed.id, claimed.claim_token)
    prune(engine)
    after = scrape(engine)
    assert value(after, "wrk_queue_depth", kind="build", state="dead") == 0
    assert value(after, "wrk_triggers_dead_total", kind="build") == 2
    assert_none_went_back(found, after)


def test_a_counter_bumped_in_a_transaction_that_rolls_back_is_not_counted(engine):
    with transaction(engine) as session:
        version = factories.version(session, factories.project(session, factories.tenant(session).id))
        version_id = version.id
    try:
        with transaction(engine) as session:
            build.request_build(session, session.get(models.AutomationVersion, version_id), Actor.user("ops-1"))
            raise RuntimeError("the request failed after its build was begun")
    except RuntimeError:
        pass
    assert value(scrape(engine), "wrk_builds_total", outcome="requested") == 0
