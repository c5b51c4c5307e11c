"""outbox_sensor launches one delivery run when e-mails or Slack messages are due, and none while a
delivery run is in flight or nothing is due; deliver_notifications then sends them to the sandbox."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
from sqlalchemy import select, update

from domain.core.models import Notification, NotificationChannel
from domain.core.notifications import notify, ops_alert
from domain.core.store import transaction
from domain.queue.queue import now_utc
from orchestration_defs.housekeeping import deliver_notifications
from resources.dagster_resources import DatabaseResource, NotificationsResource
from sensors.housekeeping import outbox_sensor


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def resources(database_url, flow_env):
    return {"database": DatabaseResource(url=database_url), "notifications": NotificationsResource()}


def _tick(instance, resources) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance, resources=resources, sensor_name="outbox_sensor") as context:
        return outbox_sensor.evaluate_tick(context)


def test_nothing_due_launches_nothing(engine, instance, resources):
    with transaction(engine) as session:
        # in-app rows are delivered when stored; an e-mail backing off is not due yet
        notify(
            session,
            channel=NotificationChannel.IN_APP,
            template="ops_alert",
            recipient="user-1",
            payload={"summary": "s", "details": "d", "severity": "low"},
            dedup_key="in-app-1",
        )
        ops_alert(session, "ops@wrk.test", summary="later", details="d", dedup_key="later-1")
        session.execute(
            update(Notification)
            .where(Notification.dedup_key == "later-1")
            .values(next_attempt_at=now_utc() + timedelta(hours=1))
        )
    result = _tick(instance, resources)
    assert not result.run_requests and result.skip_message == "nothing due"


def test_a_due_message_launches_one_delivery_run_and_none_while_one_is_in_flight(engine, instance, resources):
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="due", details="d", dedup_key="due-1")
    [request] = _tick(instance, resources).run_requests
    assert isinstance(request, dg.RunRequest)
    instance.create_run_for_job(deliver_notifications, tags=request.tags, status=dg.DagsterRunStatus.STARTED)
    in_flight = _tick(instance, resources)
    assert not in_flight.run_requests and in_flight.skip_message == "a delivery run is in flight"


def test_the_delivery_run_sends_what_the_sensor_saw_then_the_sensor_rests(engine, instance, resources, sandbox):
    with transaction(engine) as session:
        ops_alert(session, "ops@wrk.test", summary="disk full", details="d", dedup_key="due-2")
    assert _tick(instance, resources).run_requests
    result = deliver_notifications.execute_in_process(instance=instance, resources=resources)
    assert result.success and result.output_for_node("deliver_outbox") == {"sent": 1, "failed": 0, "dead": 0}
    [mail] = sandbox.mail()
    assert mail["to"] == ["ops@wrk.test"] and "disk full" in mail["subject"]
    with transaction(engine) as session:
        assert session.scalars(select(Notification.status)).all() == ["sent"]
    rested = _tick(instance, resources)
    assert not rested.run_requests and rested.skip_message == "nothing due"
