"""`POST /v1/releases` (a release started by hand, queued as the webhook queues it), `GET /v1/releases?tag=`,
and a project's deploy status and history (`GET /v1/projects/{id}`, `GET /v1/projects/{id}/deployments`)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import select

from domain import deploy
from domain.core.lifecycle import Actor
from domain.core.models import AuditLog, ReleaseBuild, TriggerQueue
from domain.core.store import transaction
from domain.release import release as rel
from tests.api.conftest import bearer, make_token


def _ops(settings, roles=("ops_release",), sub="rita"):
    return bearer(make_token(settings, tenants=[], roles=list(roles), sub=sub))


def test_a_release_started_by_hand_is_queued_once_and_audited(client, settings, engine):
    started = client.post("/v1/releases", json={"tag": "v4.0.0", "prerelease": True}, headers=_ops(settings))
    assert started.status_code == 202, started.text
    body = started.json()
    assert (body["status"], body["tag"], body["release_id"]) == ("queued", "v4.0.0", None)
    assert body["follow"] == {"releases": "/v1/releases?tag=v4.0.0", "trigger": f"/v1/queue/{body['trigger_id']}"}
    again = client.post("/v1/releases", json={"tag": "v4.0.0"}, headers=_ops(settings))
    assert again.status_code == 200 and again.json()["status"] == "already_queued"
    assert again.json()["trigger_id"] == body["trigger_id"]
    with transaction(engine) as session:
        [row] = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "release")).all()
        [audit] = session.scalars(select(AuditLog).where(AuditLog.action == "release_requested")).all()
    assert (row.payload["source"], row.payload["prerelease"], row.tenant_id) == ("api", True, None)
    assert (audit.actor_id, audit.entity_id, audit.details["tag"]) == ("rita", str(row.id), "v4.0.0")


def test_a_running_release_is_already_queued_with_its_id(client, settings, engine):
    with transaction(engine) as session:
        release_id = rel.start_release(session, "v4.1.0", None, False, ["bllvm-node"], "run-1")
    answer = client.post("/v1/releases", json={"tag": "v4.1.0"}, headers=_ops(settings))
    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["release_id"], answer.json()["trigger_id"]) == (
        "already_queued",
        release_id,
        None,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tag": "v1..2"}, "tag"),
        ({"tag": ""}, "tag"),
        ({"tag": "v1", "repositories": ["no-such-repo"]}, "repositories"),
        ({"tag": "v1", "repositories": []}, "repositories"),
        ({"tag": "v1", "colour": "blue"}, "colour"),
    ],
)
def test_an_invalid_release_start_is_422_naming_the_field(client, settings, engine, body, field):
    answer = client.post("/v1/releases", json=body, headers=_ops(settings))
    assert answer.status_code == 422 and answer.json()["code"] == "validation_error"
    assert any(e["field"].startswith(field) for e in answer.json()["errors"])
    with transaction(engine) as session:
        assert session.scalars(select(TriggerQueue)).all() == []


def test_only_a_platform_release_role_starts_or_lists_releases(client, settings, demo):
    tenant = demo["tenants"][0]["id"]
    in_a_tenant = bearer(make_token(settings, tenants=[tenant], roles=[], tenant_roles={tenant: ["ops_release"]}))
    for call in (lambda h: client.post("/v1/releases", json={"tag": "v5"}, headers=h),
                 lambda h: client.get("/v1/releases", headers=h)):  # fmt: skip
        assert call(in_a_tenant).status_code == 403
        assert call({}).status_code == 401


def test_releases_are_listed_by_tag_with_a_bounded_limit(client, settings, engine):
    with transaction(engine) as session:
        for tag in ("v6.0.0", "release/6.1", "v6.2.0"):
            rel.start_release(session, tag, None, False, ["bllvm-node"], f"run-{tag}")
    one = client.get(f"/v1/releases?tag={quote('release/6.1', safe='')}", headers=_ops(settings)).json()
    assert [r["tag"] for r in one["releases"]] == ["release/6.1"]
    assert len(client.get("/v1/releases?limit=2", headers=_ops(settings)).json()["releases"]) == 2
    assert client.get("/v1/releases?tag=nothing", headers=_ops(settings)).json() == {"releases": []}
    for limit in ("0", "201", "x"):
        refused = client.get(f"/v1/releases?limit={limit}", headers=_ops(settings))
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "limit"
    with transaction(engine) as session:
        assert session.scalars(select(ReleaseBuild.tag).order_by(ReleaseBuild.tag)).all() == [
            "release/6.1",
            "v6.0.0",
            "v6.2.0",
        ]


# --- a project's deploy status and history --------------------------------------------------------


def _order_sync(demo):
    tenant = demo["tenants"][0]
    return tenant["id"], next(p for p in tenant["projects"] if p["name"] == "Order Sync")


def test_deploy_status_and_history_of_a_project(client, settings, demo, engine, sandbox, flow_env):
    import importlib

    tenant, project = _order_sync(demo)
    ready = [v["id"] for v in project["versions"] if v["status"] == "Ready to Launch"]
    saga = deploy.Saga(
        engine=engine,
        platform=importlib.import_module("resources.wrk").wrk_client(flow_env),
        ops_email="ops@wrk.test",
        deadline_s=60,
    )
    for version, reason in ((ready[0], "first"), (ready[1], "second")):
        request = deploy.Request(actor=Actor.user("olivia"), reason=reason, invoked_via="api")
        deploy.change_status(saga, frozenset({tenant}), version, "Live", request)
    headers = bearer(make_token(settings, tenants=[tenant], roles=["ops_admin"]))
    status = client.get(f"/v1/projects/{project['id']}", headers=headers)
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["live_version"]["id"] == ready[1] and body["live_version"]["deployed_by"] == "olivia"
    assert {v["id"]: v["status"] for v in body["versions"]}[ready[0]] == "Archived"
    assert body["last_deployment"]["reason"] == "second"
    history = client.get(f"/v1/projects/{project['id']}/deployments", headers=headers).json()
    assert history["total"] == 2 and [d["reason"] for d in history["items"]] == ["second", "first"]
    assert history["items"][0]["previous_live_version_id"] is not None
    assert not {"idempotency_key", "request_hash", "response_body", "tenant_id"} & set(history["items"][0])
    page = client.get(f"/v1/projects/{project['id']}/deployments?limit=1&offset=1", headers=headers).json()
    assert [d["reason"] for d in page["items"]] == ["first"] and page["total"] == 2
    refused = client.get(f"/v1/projects/{project['id']}/deployments?limit=500", headers=headers)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "limit"


def test_another_tenants_project_is_not_found(client, settings, demo):
    _tenant, project = _order_sync(demo)
    other = demo["tenants"][1]["id"]
    headers = bearer(make_token(settings, tenants=[other], roles=["ops_admin"]))
    for path in (f"/v1/projects/{project['id']}", f"/v1/projects/{project['id']}/deployments"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    client_role = bearer(make_token(settings, tenants=[_tenant], roles=["client"]))
    assert client.get(f"/v1/projects/{project['id']}", headers=client_role).status_code == 403
