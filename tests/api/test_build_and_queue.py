from sqlalchemy import select, update

from domain.core.models import AuditLog, TriggerQueue
from domain.core.store import transaction
from domain.queue import queue
from tests.api.conftest import bearer, make_token


def _version(demo, status: str, tenant: int = 0) -> tuple[str, str]:
    t = demo["tenants"][tenant]
    v = next(v for p in t["projects"] for v in p["versions"] if v["status"] == status)
    return t["id"], v["id"]


def test_build_request_moves_the_version_and_queues_one_trigger(client, settings, demo, engine):
    tenant, version = _version(demo, "Draft")
    headers = bearer(make_token(settings, tenants=[tenant], roles=["ops_build"], sub="bruno"))
    first = client.post(f"/v1/automation-versions/{version}/build", headers=headers)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["status"] == "Build in Progress" and body["queue_state"] == "available"
    assert first.headers["location"] == f"/v1/queue/{body['trigger_id']}"
    again = client.post(f"/v1/automation-versions/{version}/build", headers=headers)
    assert again.status_code == 202 and again.json()["trigger_id"] == body["trigger_id"]
    detail = client.get(f"/v1/automation-versions/{version}", headers=headers).json()
    assert detail["status"] == "Build in Progress" and detail["workflow_binding"]["status"] == "pending"
    assert detail["audit"][0]["action"] == "build_requested" and detail["audit"][0]["actor_id"] == "bruno"
    trigger = client.get(f"/v1/queue/{body['trigger_id']}", headers=headers).json()
    assert trigger["kind"] == "build" and trigger["tenant_id"] == tenant and trigger["state"] == "available"
    with transaction(engine) as session:
        rows = session.scalars(select(TriggerQueue).where(TriggerQueue.dedup_key == f"build:{version}")).all()
    assert len(rows) == 1 and rows[0].payload["automation_version_id"] == version


def test_build_of_a_live_version_is_an_invalid_transition(client, settings, demo):
    tenant, version = _version(demo, "Live")
    response = client.post(
        f"/v1/automation-versions/{version}/build",
        headers=bearer(make_token(settings, tenants=[tenant], roles=["ops_admin"])),
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "invalid_status_transition" and body["current_status"] == "Live"


def test_build_needs_a_build_role_and_the_versions_tenant(client, settings, demo):
    tenant, version = _version(demo, "Draft")
    other, _ = _version(demo, "Live", tenant=1)
    release_only = client.post(
        f"/v1/automation-versions/{version}/build",
        headers=bearer(make_token(settings, tenants=[tenant], roles=["ops_release"])),
    )
    assert release_only.status_code == 403 and release_only.json()["code"] == "forbidden"
    foreign = client.post(
        f"/v1/automation-versions/{version}/build",
        headers=bearer(make_token(settings, tenants=[other], roles=["ops_admin"])),
    )
    assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"


def test_queue_stats_and_requeue_of_a_dead_trigger(client, settings, demo, engine):
    tenant, version = _version(demo, "Draft")
    headers = bearer(make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olivia"))
    trigger_id = client.post(f"/v1/automation-versions/{version}/build", headers=headers).json()["trigger_id"]
    stats = client.get("/v1/queue/stats", headers=headers).json()
    assert stats["kinds"]["build"]["states"]["available"] == 1
    assert stats["kinds"]["build"]["oldest_launched_age_s"] is None  # nothing launched yet
    not_dead = client.post(f"/v1/queue/{trigger_id}/requeue", headers=headers)
    assert not_dead.status_code == 409 and not_dead.json()["code"] == "conflict"
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["build"], 1, 60, "test")
        queue.fail(session, claimed.id, claimed.claim_token, "boom", retryable=False)
    requeued = client.post(f"/v1/queue/{trigger_id}/requeue", headers=headers)
    assert requeued.status_code == 200 and requeued.json()["state"] == "available"
    assert requeued.json()["attempts"] == 0
    with transaction(engine) as session:
        [entry] = session.scalars(select(AuditLog).where(AuditLog.action == "trigger_requeued")).all()
    assert (entry.actor_id, entry.entity_id, entry.details["previous_state"]) == ("olivia", str(trigger_id), "dead")
    other, _ = _version(demo, "Live", tenant=1)
    foreign = client.post(
        f"/v1/queue/{trigger_id}/requeue", headers=bearer(make_token(settings, tenants=[other], roles=["ops_admin"]))
    )
    assert foreign.status_code == 404


def test_queue_stats_needs_an_ops_role(client, settings):
    response = client.get("/v1/queue/stats", headers=bearer(make_token(settings, tenants=["t"], roles=["client"])))
    assert response.status_code == 403


def test_cli_queue_stats_prints_json(engine, database_url):
    import json
    import os
    import subprocess
    import sys

    with transaction(engine) as session:
        session.execute(update(TriggerQueue).values(state="done"))
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "queue", "stats"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DATABASE_URL": database_url},
    )
    kinds = json.loads(out.stdout)["kinds"]
    assert set(kinds) >= {"build", "release", "phase", "approval"}
    assert all("oldest_launched_age_s" in kind for kind in kinds.values())
