"""The happy path of Flow 22 from the HTTP request through the queue, the sensor and the job to the
final rows and the delivered notifications."""

import dagster as dg
from sqlalchemy import select
from starlette.testclient import TestClient

from api.app import create_app
from cli.demo import seed_demo
from domain.core import models
from domain.core.settings import get_settings
from domain.core.store import transaction
from orchestration_defs.build import build_automation_version
from orchestration_defs.housekeeping import deliver_notifications
from resources.dagster_resources import DatabaseResource, NotificationsResource, WrkPlatformResource
from sensors.build import build_queue_sensor
from sensors.queue import queue_ack_sensor
from tests.api.conftest import bearer, make_token


def test_build_request_over_http_ends_in_qa_with_notifications_delivered(
    engine, database_url, sandbox, flow_env, tmp_path
):
    with transaction(engine) as session:
        demo = seed_demo(session)
    tenant = demo["tenants"][0]
    version = next(v for p in tenant["projects"] for v in p["versions"] if v["status"] == "Draft")
    resources = {
        "database": DatabaseResource(url=database_url),
        "wrk": WrkPlatformResource(),
        "notifications": NotificationsResource(),
    }
    with TestClient(create_app(get_settings(), engine)) as client:
        token = make_token(get_settings(), tenants=[tenant["id"]], roles=["ops_build"], sub="bruno")
        accepted = client.post(f"/v1/automation-versions/{version['id']}/build", headers=bearer(token))
        assert accepted.status_code == 202

        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            with dg.build_sensor_context(
                instance=instance, resources=resources, sensor_name="build_queue_sensor"
            ) as context:
                tick = build_queue_sensor.evaluate_tick(context)
            [request] = tick.run_requests
            assert request.run_key == f"build:{accepted.json()['trigger_id']}:{request.tags['wrk/claim_token']}"
            result = build_automation_version.execute_in_process(
                run_config=request.run_config, tags=request.tags, instance=instance, resources=resources
            )
            assert result.success
            run = instance.get_run_by_id(result.run_id)
            assert run.tags["wrk/automation_version_id"] == version["id"]
            assert run.tags["wrk/tenant_id"] == tenant["id"]
            success = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
            queue_ack_sensor(
                dg.build_run_status_sensor_context(
                    sensor_name="queue_ack_sensor",
                    dagster_instance=instance,
                    dagster_run=run,
                    dagster_event=success.records[0].event_log_entry.dagster_event,
                    resources={"database": resources["database"]},  # what the daemon gives it: its own
                )
            )
            assert deliver_notifications.execute_in_process(instance=instance, resources=resources).success

        followed = client.get(f"/v1/automation-versions/{version['id']}", headers=bearer(token)).json()
        trigger = client.get(accepted.headers["location"], headers=bearer(token)).json()
    assert followed["status"] == "QA & Testing"
    assert followed["workflow_binding"]["status"] == "active"
    assert followed["audit"][0]["action"] == "build_complete"
    assert trigger["state"] == "done" and trigger["run_id"] == result.run_id
    with transaction(engine) as session:
        in_app = session.scalars(select(models.Notification).where(models.Notification.channel == "in_app")).all()
    assert [n.template for n in in_app] == ["qa_ready"]
    mail = sorted((m["to"][0], m["subject"]) for m in sandbox.mail())
    assert mail == [
        ("carla.client@acme.example", "Your automation Invoice Intake v1 is built"),
        ("ops@wrk.test", "QA ready: Invoice Intake v1"),
    ]
