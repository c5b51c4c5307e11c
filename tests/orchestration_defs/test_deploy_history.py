"""The deploy history in Dagster: each committed deploy, rollback, pause and resume is recorded in the
outbox with its commit and reported by the delivery run as a runless materialization of the project's
partition of `live_version`; a Dagster outage never fails a deploy, the message waits and is reported
later, once."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from api.app import create_app
from cli.demo import seed_demo
from domain.core import models
from domain.core.models import Notification, NotificationChannel
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.deploy.history import partition_key
from domain.queue.queue import now_utc
from orchestration_defs.deploy import LIVE_VERSION_PROJECTS, live_version, report_live_version
from orchestration_defs.housekeeping import deliver, deliver_notifications
from resources.dagster_resources import DatabaseResource, NotificationsResource
from tests.api.conftest import bearer, make_token


@pytest.fixture
def demo(engine):
    with transaction(engine) as session:
        return seed_demo(session)


@pytest.fixture
def client(engine, flow_env):
    with TestClient(create_app(get_settings(), engine), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def resources(database_url, flow_env):
    return {"database": DatabaseResource(url=database_url), "notifications": NotificationsResource()}


def _project(demo, name):
    tenant = demo["tenants"][0]
    return tenant, next(p for p in tenant["projects"] if p["name"] == name)


def _headers(tenant):
    return bearer(make_token(get_settings(), tenants=[tenant["id"]], roles=["ops_release"], sub="rita"))


def _timeline(instance, partition):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=live_version.key, asset_partitions=[partition]), limit=100, ascending=True
    ).records
    return [r.asset_materialization for r in records]


def _meta(materialization) -> dict[str, str]:
    return {key: value.value for key, value in materialization.metadata.items()}


def test_a_deploy_then_a_rollback_are_two_materializations_of_the_projects_partition_in_order(
    engine, client, demo, instance, resources, sandbox
):
    tenant, project = _project(demo, "Order Sync")
    first, second = [v["id"] for v in project["versions"] if v["status"] == "Ready to Launch"][:2]
    for version, reason in ((first, "first go-live"), (second, "second go-live")):
        deployed = client.patch(
            f"/v1/automation-versions/{version}/status",
            json={"status": "Live", "deployment_reason": reason},
            headers=_headers(tenant),
        )
        assert deployed.status_code == 200, deployed.text
    rolled_back = client.post(
        f"/v1/projects/{project['id']}/rollback", json={"reason": "bad release"}, headers=_headers(tenant)
    )
    assert rolled_back.status_code == 200, rolled_back.text
    with transaction(engine) as session:
        deployments = dict(
            session.execute(
                select(models.Deployment.action, models.Deployment.id).where(
                    models.Deployment.project_id == project["id"], models.Deployment.action == "rollback"
                )
            ).all()
        )

    result = deliver_notifications.execute_in_process(instance=instance, resources=resources)
    assert result.success

    partition = partition_key(tenant["name"], project["name"])
    assert instance.get_dynamic_partitions(LIVE_VERSION_PROJECTS.name) == [partition]
    deploy_one, deploy_two, rollback = _timeline(instance, partition)
    assert [_meta(m)["action"] for m in (deploy_one, deploy_two, rollback)] == ["deploy", "deploy", "rollback"]
    assert _meta(deploy_one)["version_id"] == first and "previous_version_id" not in _meta(deploy_one)
    meta = _meta(rollback)
    assert meta["version_id"] == first and meta["previous_version_id"] == second
    assert meta["actor"] == "rita" and meta["reason"] == "bad release"
    assert meta["deployment_id"] == deployments["rollback"]
    assert meta["tenant_id"] == tenant["id"] and meta["tenant"] == tenant["name"]
    assert meta["project"] == project["name"] and meta["project_id"] == project["id"]
    assert meta["version"].startswith("v") and meta["previous_version"].startswith("v")
    assert rollback.description == f"rollback {meta['version']} by rita. Reason: bad release"

    # A second delivery run finds nothing due: each commit is reported once.
    again = deliver_notifications.execute_in_process(instance=instance, resources=resources)
    assert again.success and len(_timeline(instance, partition)) == 3


def test_a_pause_and_a_resume_are_reported_too(engine, client, demo, instance, resources, sandbox):
    tenant, project = _project(demo, "Invoice Intake")
    [live] = [v["id"] for v in project["versions"] if v["status"] == "Live"]
    for status in ("Paused", "Live"):
        changed = client.patch(
            f"/v1/automation-versions/{live}/status",
            json={"status": status, "deployment_reason": f"to {status}"},
            headers=_headers(tenant),
        )
        assert changed.status_code == 200, changed.text
    assert deliver_notifications.execute_in_process(instance=instance, resources=resources).success
    paused, resumed = _timeline(instance, partition_key(tenant["name"], project["name"]))
    assert (_meta(paused)["action"], _meta(paused)["version_id"], _meta(paused)["reason"]) == (
        "pause",
        live,
        "to Paused",
    )
    assert (_meta(resumed)["action"], _meta(resumed)["version_id"]) == ("resume", live)
    assert _meta(paused)["deployment_id"] != _meta(resumed)["deployment_id"]


@pytest.fixture
def unreachable_instance(tmp_path):
    """A Dagster instance whose event log is a PostgreSQL server that is not there."""
    storage = {
        "module": "dagster_postgres.event_log",
        "class": "PostgresEventLogStorage",
        "config": {
            "postgres_url": "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2",
            "should_autocreate_tables": False,
        },
    }
    (tmp_path / "down").mkdir()
    with dg.instance_for_test(overrides={"event_log_storage": storage}, temp_dir=str(tmp_path / "down")) as down:
        yield down


def test_a_dagster_outage_never_fails_a_deploy_and_the_event_is_reported_later_once(
    engine, client, demo, instance, unreachable_instance, resources, sandbox
):
    tenant, project = _project(demo, "Order Sync")
    version = next(v["id"] for v in project["versions"] if v["status"] == "Ready to Launch")
    deployed = client.patch(
        f"/v1/automation-versions/{version}/status", json={"status": "Live"}, headers=_headers(tenant)
    )
    assert deployed.status_code == 200, deployed.text

    report = deliver(engine, unreachable_instance, lambda _message: None)
    assert report.failed >= 1 and report.dead == 0
    with transaction(engine) as session:
        [row] = session.scalars(select(Notification).where(Notification.channel == NotificationChannel.DAGSTER)).all()
        assert (row.status, row.attempts) == ("pending", 1)
        assert "RetryableError" in (row.last_error or "") and row.next_attempt_at > now_utc()
        # The backoff has passed.
        session.execute(update(Notification).values(next_attempt_at=now_utc() - timedelta(seconds=1)))

    assert deliver_notifications.execute_in_process(instance=instance, resources=resources).success
    partition = partition_key(tenant["name"], project["name"])
    [event] = _timeline(instance, partition)
    assert _meta(event)["version_id"] == version and _meta(event)["action"] == "deploy"
    with transaction(engine) as session:
        assert session.scalar(select(Notification.status).where(Notification.id == row.id)) == "sent"


def test_partition_keys_are_valid_and_unique_for_any_unicode_name():
    assert partition_key("Acme", "Order Sync") == "Acme/Order Sync"
    assert partition_key("Ünïcødé", "受注 同期") == "Ünïcødé/受注 同期"
    # The separator, the escape, "..." and control characters are encoded: no two projects share a key.
    assert partition_key("a/b", "c") != partition_key("a", "b/c")
    assert partition_key("a", "100%2F") != partition_key("a", "100%/")
    key = partition_key("t", "wait....\n\tdone")
    assert "..." not in key and "\n" not in key and "\t" not in key
    dg.DynamicPartitionsDefinition(name="check").build_add_request([key])  # Dagster accepts it


def test_a_redelivered_message_is_not_reported_twice_and_any_name_is_a_partition(
    engine, client, demo, instance, sandbox
):
    tenant, project = _project(demo, "Order Sync")
    name = "Zahlungsläufe / 受注... \u2028 ✓"
    with transaction(engine) as session:
        session.execute(update(models.Project).where(models.Project.id == project["id"]).values(name=name))
    version = next(v["id"] for v in project["versions"] if v["status"] == "Ready to Launch")
    deployed = client.patch(
        f"/v1/automation-versions/{version}/status", json={"status": "Live"}, headers=_headers(tenant)
    )
    assert deployed.status_code == 200, deployed.text
    with transaction(engine) as session:
        [message] = session.scalars(
            select(Notification).where(Notification.channel == NotificationChannel.DAGSTER)
        ).all()
        session.expunge(message)
    # The delivery's record was lost after the report: the message is reported again.
    report_live_version(instance, message)
    report_live_version(instance, message)
    [event] = _timeline(instance, partition_key(tenant["name"], name))
    assert _meta(event)["project"] == name and _meta(event)["version_id"] == version
