"""Flow 24 / 24B: every router branch and error code, over the sandbox's HTTP."""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import httpx
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from api.app import create_app
from domain import models
from domain.settings import Settings
from domain.store import transaction
from orchestration_defs.deploy import reconcile_deployments
from resources.dagster_resources import DatabaseResource, WrkPlatformResource
from tests.api.conftest import bearer, make_token
from tests.servers import ServerThread


@pytest.fixture
def settings(sandbox) -> Settings:
    return Settings(
        environment="test",
        wrk_api_url=sandbox.url,
        smtp_port=sandbox.smtp_port,
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.05,
        ops_email="ops@wrk.test",
    )


@pytest.fixture
def client(settings, engine):
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as c:
        yield c


def _ids(demo, project: str, status: str | None = None) -> tuple[str, list[dict]]:
    tenant = demo["tenants"][0]
    versions = next(p for p in tenant["projects"] if p["name"] == project)["versions"]
    return tenant["id"], [v for v in versions if status is None or v["status"] == status]


def _patch(client, settings, tenant, version_id, body, **headers):
    token = make_token(settings, tenants=[tenant], roles=["ops_release"], sub="rita")
    return client.patch(f"/v1/automation-versions/{version_id}/status", json=body, headers={**bearer(token), **headers})


def _workflow_active(sandbox, workflow_id) -> bool:
    return sandbox.http.get(f"/wrk-api/workflows/{workflow_id}", headers={"Authorization": "Bearer t"}).json()["active"]


def _binding(engine, version_id) -> models.WorkflowBinding:
    with transaction(engine) as session:
        return session.scalars(
            select(models.WorkflowBinding).where(models.WorkflowBinding.automation_version_id == version_id)
        ).one()


def test_deploy_then_deploy_another_archives_the_first(client, settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    first, second = candidates[0]["id"], candidates[1]["id"]
    one = _patch(client, settings, tenant, first, {"status": "Live", "deployment_reason": "first go-live"})
    assert one.status_code == 200, one.text
    assert one.json()["status"] == "Live" and one.json()["project"]["status"] == "Live"
    assert one.json()["deployed_by"] == "rita" and one.json()["deployment_reason"] == "first go-live"
    wf_first = _binding(engine, first).wrk_workflow_id
    assert _workflow_active(sandbox, wf_first)
    two = _patch(client, settings, tenant, second, {"status": "Live", "last_known_status": "Ready to Launch"})
    assert two.status_code == 200
    with transaction(engine) as session:
        statuses = {
            v.id: v.status
            for v in session.scalars(
                select(models.AutomationVersion).where(models.AutomationVersion.id.in_([first, second]))
            )
        }
        deploy_rows = session.scalars(
            select(models.AuditLog)
            .where(models.AuditLog.action == "deploy", models.AuditLog.entity_type == "automation_versions")
            .order_by(models.AuditLog.id)
        ).all()
        outbox = session.execute(select(models.Notification.channel, models.Notification.template)).all()
    assert statuses == {first: "Archived", second: "Live"}
    assert _binding(engine, first).status == "inactive" and not _workflow_active(sandbox, wf_first)
    assert [r.entity_id for r in deploy_rows] == [first, second]
    meta = deploy_rows[1].details
    assert meta["previous_live_version_id"] == first and meta["invoked_via"] == "api"
    assert (deploy_rows[1].previous_status, deploy_rows[1].new_status, deploy_rows[1].actor_id) == (
        "Ready to Launch",
        "Live",
        "rita",
    )
    assert outbox.count(("email", "automation_live")) == 2 and outbox.count(("email", "deployment_success")) == 2
    assert outbox.count(("in_app", "automation_live")) == 4  # two collaborators, two deploys


def test_live_is_idempotent_and_other_statuses_are_refused(client, settings, demo, sandbox):
    tenant, [live] = _ids(demo, "Invoice Intake", "Live")
    again = _patch(client, settings, tenant, live["id"], {"status": "Live"})
    assert again.status_code == 200 and again.json()["status"] == "Live"
    assert sandbox.calls("PATCH") == []  # no side effect
    for status in ("Draft", "Build in Progress", "QA & Testing", "Archived", "Error"):
        _, [version] = _ids(demo, "Invoice Intake", status)
        refused = _patch(client, settings, tenant, version["id"], {"status": "Live"})
        assert refused.status_code == 409 and refused.json()["code"] == "invalid_status_transition", status


def test_pause_and_resume(client, settings, demo, engine, sandbox):
    tenant, [live] = _ids(demo, "Invoice Intake", "Live")
    workflow = _binding(engine, live["id"]).wrk_workflow_id
    paused = _patch(client, settings, tenant, live["id"], {"status": "Paused", "deployment_reason": "incident"})
    assert paused.status_code == 200 and paused.json()["status"] == "Paused"
    assert not _workflow_active(sandbox, workflow)
    resumed = _patch(client, settings, tenant, live["id"], {"status": "Live"})
    assert resumed.status_code == 200 and resumed.json()["status"] == "Live"
    assert _workflow_active(sandbox, workflow)
    actions = [a["action"] for a in resumed.json()["audit"][:2]]
    assert actions == ["resume", "pause"]


def test_resume_of_the_demo_paused_version_archives_the_live_one(client, settings, demo):
    tenant, [paused] = _ids(demo, "Invoice Intake", "Paused")
    _, [live] = _ids(demo, "Invoice Intake", "Live")
    response = _patch(client, settings, tenant, paused["id"], {"status": "Live"})
    assert response.status_code == 200
    assert (
        _patch(client, settings, tenant, live["id"], {"status": "Live"}).json()["code"] == "invalid_status_transition"
    )


def test_binding_not_deployable_is_a_precondition_failure_with_no_change(client, settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    with transaction(engine) as session:
        session.execute(
            update(models.WorkflowBinding)
            .where(models.WorkflowBinding.automation_version_id == version)
            .values(status="error")
        )
    response = _patch(client, settings, tenant, version, {"status": "Live"})
    assert response.status_code == 409 and response.json()["code"] == "precondition_failed"
    assert sandbox.calls("PATCH") == []


def test_activation_failure_leaves_nothing_live_and_alerts_ops(client, settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", count=10, status=503)
    response = _patch(client, settings, tenant, candidates[0]["id"], {"status": "Live"})
    assert response.status_code == 502 and response.json()["code"] == "deployment_failed"
    assert len(sandbox.calls("PATCH")) == settings.retry_max_attempts
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, candidates[0]["id"])
        alerts = session.scalars(select(models.Notification).where(models.Notification.template == "ops_alert")).all()
    assert version.status == "Ready to Launch" and len(alerts) == 1


def test_concurrency_hints_mismatch_is_a_conflict(client, settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    response = _patch(
        client,
        settings,
        tenant,
        candidates[0]["id"],
        {"status": "Live", "last_known_updated_at": "2020-01-01T00:00:00Z"},
    )
    assert response.status_code == 409 and response.json()["code"] == "concurrency_conflict"
    workflow = _binding(engine, candidates[0]["id"]).wrk_workflow_id
    assert not _workflow_active(sandbox, workflow)  # the activation was undone


def test_previous_deactivation_failure_is_reconciled(
    client, settings, demo, engine, sandbox, database_url, tmp_path, flow_env
):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    first, second = candidates[0]["id"], candidates[1]["id"]
    assert _patch(client, settings, tenant, first, {"status": "Live"}).status_code == 200
    wf_first = _binding(engine, first).wrk_workflow_id
    sandbox.fault("PATCH", f"/wrk-api/workflows/{wf_first}/deactivate", count=10, status=500)
    response = _patch(client, settings, tenant, second, {"status": "Live"})
    assert response.status_code == 200  # the commit stands
    assert _workflow_active(sandbox, wf_first)
    with transaction(engine) as session:
        alerts = session.scalars(
            select(models.Notification.payload).where(models.Notification.template == "ops_alert")
        ).all()
    assert len(alerts) == 1 and alerts[0]["summary"].startswith("HIGH")
    sandbox.http.delete("/_sandbox/faults")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = reconcile_deployments.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url), "wrk": WrkPlatformResource()}
        )
    assert result.success and wf_first in result.output_for_node("reconcile_platform_workflows")["deactivated"]
    assert not _workflow_active(sandbox, wf_first)
    assert _workflow_active(sandbox, _binding(engine, second).wrk_workflow_id)


def test_idempotency_key_replays_and_refuses_another_body(client, settings, demo, engine):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    body = {"status": "Live", "deployment_reason": "release 42"}
    first = _patch(client, settings, tenant, version, body, **{"Idempotency-Key": "k-42"})
    replay = _patch(client, settings, tenant, version, body, **{"Idempotency-Key": "k-42"})
    assert first.status_code == replay.status_code == 200 and first.json() == replay.json()
    other = _patch(client, settings, tenant, version, {"status": "Paused"}, **{"Idempotency-Key": "k-42"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    with transaction(engine) as session:
        deploys = session.scalars(
            select(models.AuditLog).where(
                models.AuditLog.action == "deploy", models.AuditLog.entity_type == "automation_versions"
            )
        ).all()
    assert len(deploys) == 1


def test_auth_for_the_status_endpoint(client, settings, demo):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    url = f"/v1/automation-versions/{candidates[0]['id']}/status"
    assert client.patch(url, json={"status": "Live"}, headers=bearer("wrk_api_abc")).status_code == 401
    assert client.patch(url, json={"status": "Live"}).status_code == 401
    client_role = bearer(make_token(settings, tenants=[tenant], roles=["client"]))
    assert client.patch(url, json={"status": "Live"}, headers=client_role).status_code == 403
    other_tenant = demo["tenants"][1]["id"]
    foreign = bearer(make_token(settings, tenants=[other_tenant], roles=["ops_admin"]))
    assert client.patch(url, json={"status": "Live"}, headers=foreign).status_code == 404
    invalid = client.patch(
        url, json={"status": "Shipped"}, headers=bearer(make_token(settings, tenants=[tenant], roles=["ops_admin"]))
    )
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "status"


def test_concurrent_deploys_never_make_two_live_versions(settings, demo, engine):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    ids = [c["id"] for c in candidates]
    project_id = next(p for p in demo["tenants"][0]["projects"] if p["name"] == "Order Sync")["id"]
    server = ServerThread(create_app(settings, engine)).start()
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="racer")
    seen_two, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with transaction(engine) as session:
                live = session.scalars(
                    select(models.AutomationVersion.id).where(
                        models.AutomationVersion.project_id == project_id, models.AutomationVersion.status == "Live"
                    )
                ).all()
            if len(live) > 1:
                seen_two.append(live)

    def deploy(n: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # With the status the client last saw: a version someone else made Live meanwhile is a conflict.
            body = {"status": "Live", "last_known_status": "Ready to Launch"}
            return http.patch(
                f"/v1/automation-versions/{ids[n % len(ids)]}/status", json=body, headers=bearer(token)
            ).status_code

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(deploy, range(50)))
    finally:
        stop.set()
        watcher.join()
        server.stop()
    assert seen_two == []
    assert set(codes) <= {200, 409} and codes.count(200) >= 1
    with transaction(engine) as session:
        live = session.scalars(
            select(models.AutomationVersion.id).where(
                models.AutomationVersion.project_id == project_id, models.AutomationVersion.status == "Live"
            )
        ).all()
        deploys = session.scalars(
            select(models.AuditLog)
            .where(models.AuditLog.action == "deploy", models.AuditLog.entity_id.in_(ids))
            .order_by(models.AuditLog.id)
        ).all()
    assert len(live) == 1
    assert len(deploys) == codes.count(200)  # every success has its own deploy row
    assert deploys[-1].entity_id == live[0]  # the last deploy explains the final state
    for earlier, later in itertools.pairwise(deploys):
        assert later.details["previous_live_version_id"] == earlier.entity_id


def test_database_failure_in_the_transaction_rolls_back_and_undoes_the_activation(
    client, settings, demo, engine, sandbox, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    from domain import deploy

    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]

    def database_down(*_args, **_kwargs):
        raise OperationalError("UPDATE automation_versions ...", {}, Exception("connection lost"))

    monkeypatch.setattr(deploy, "commit_live", database_down)
    response = _patch(client, settings, tenant, version, {"status": "Live"})
    assert response.status_code == 500 and response.json()["code"] == "deployment_failed"
    with transaction(engine) as session:
        assert session.get(models.AutomationVersion, version).status == "Ready to Launch"
    assert not _workflow_active(sandbox, _binding(engine, version).wrk_workflow_id)
