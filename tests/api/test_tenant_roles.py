"""Roles are per tenant: a user who is ops in one tenant and a client in
another acts as ops only in the first, in the versions, deploy and queue routes alike."""

from __future__ import annotations

from domain import models, queue
from domain.store import transaction
from tests.api.conftest import bearer, make_token
from tests.api.test_auth import OPS, _problem


def _by_status(demo, tenant: int, status: str) -> str:
    projects = demo["tenants"][tenant]["projects"]
    return next(v["id"] for p in projects for v in p["versions"] if v["status"] == status)


def _ops_in_a_client_in_b(settings, demo, **overrides):
    acme, globex = demo["tenants"][0]["id"], demo["tenants"][1]["id"]
    claims = {"tenant_roles": {acme: ["ops_admin"], globex: ["client"]}, **overrides}
    return acme, globex, bearer(make_token(settings, tenants=[acme, globex], roles=[], **claims))


def test_roles_come_from_the_tenant_acted_in(client, settings, demo):
    _acme, globex, headers = _ops_in_a_client_in_b(settings, demo)
    mine, theirs = _by_status(demo, 0, "Live"), _by_status(demo, 1, "Live")
    assert client.get(f"/v1/automation-versions/{mine}", headers=headers).status_code == 200
    # in B the user is a client: B's rows are outside the lookup scope, and naming B is refused
    _problem(client.get(f"/v1/automation-versions/{theirs}", headers=headers), 404, "not_found")
    body = _problem(
        client.get(f"/v1/automation-versions/{theirs}", headers={**headers, "X-Tenant-ID": globex}), 403, "forbidden"
    )
    assert globex in body["detail"]


def test_ops_in_one_tenant_cannot_deploy_or_build_in_another(client, settings, demo, engine):
    _acme, globex, headers = _ops_in_a_client_in_b(settings, demo)
    projects = demo["tenants"][1]["projects"]
    versions = [v for p in projects for v in p["versions"]]
    for v in versions:
        with_b = {**headers, "X-Tenant-ID": globex}
        build = client.post(f"/v1/automation-versions/{v['id']}/build", headers=with_b)
        deploy = client.patch(f"/v1/automation-versions/{v['id']}/status", json={"status": "Live"}, headers=with_b)
        _problem(build, 403, "forbidden")
        _problem(deploy, 403, "forbidden")
        assert client.post(f"/v1/automation-versions/{v['id']}/build", headers=headers).status_code == 404
    with transaction(engine) as session:
        after = {v["id"]: session.get(models.AutomationVersion, v["id"]).status for v in versions}
    assert after == {v["id"]: v["status"] for v in versions}


def test_a_flat_role_list_for_several_tenants_is_no_role_in_any(client, settings, demo):
    acme, globex = demo["tenants"][0]["id"], demo["tenants"][1]["id"]
    headers = bearer(make_token(settings, tenants=[acme, globex], roles=OPS))
    for tenant, index in ((acme, 0), (globex, 1)):
        version = _by_status(demo, index, "Live")
        _problem(
            client.get(f"/v1/automation-versions/{version}", headers={**headers, "X-Tenant-ID": tenant}),
            403,
            "forbidden",
        )


def test_tenant_roles_outside_the_tokens_tenants_are_ignored(client, settings, demo):
    acme, globex = demo["tenants"][0]["id"], demo["tenants"][1]["id"]
    token = make_token(settings, tenants=[acme], roles=["client"], tenant_roles={globex: OPS})
    theirs = _by_status(demo, 1, "Live")
    _problem(client.get(f"/v1/automation-versions/{theirs}", headers=bearer(token)), 403, "forbidden")


def _triggers(engine, acme: str, globex: str) -> dict[str, int]:
    with transaction(engine) as session:

        def build(tenant: str) -> dict[str, str]:
            return {"tenant_id": tenant, "project_id": "p", "automation_version_id": "v", "workflow_binding_id": "b"}

        return {
            "acme": queue.enqueue(session, "build", acme, build(acme)),
            "globex": queue.enqueue(session, "build", globex, build(globex)),
            "platform": queue.enqueue(session, "release", None, {"tag": "v1"}),
        }


def _available(stats: dict, kind: str) -> int:
    return int(stats["kinds"][kind]["states"]["available"])


def test_queue_rows_and_stats_follow_the_tenants_roles(client, settings, demo, engine):
    acme, globex, headers = _ops_in_a_client_in_b(settings, demo)
    with transaction(engine) as session:  # the demo's own triggers are not part of this count
        session.execute(models.TriggerQueue.__table__.delete())
    rows = _triggers(engine, acme, globex)
    assert client.get(f"/v1/queue/{rows['acme']}", headers=headers).status_code == 200
    _problem(client.get(f"/v1/queue/{rows['globex']}", headers=headers), 404, "not_found")
    _problem(client.post(f"/v1/queue/{rows['globex']}/requeue", headers=headers), 404, "not_found")
    _problem(client.get("/v1/queue/stats", headers={**headers, "X-Tenant-ID": globex}), 403, "forbidden")
    stats = client.get("/v1/queue/stats", headers=headers).json()
    # only A's row: B's is another tenant's, the release row belongs to no tenant (no platform role)
    assert (_available(stats, "build"), _available(stats, "release")) == (1, 0)
    _problem(client.get(f"/v1/queue/{rows['platform']}", headers=headers), 404, "not_found")


def test_tenantless_queue_rows_need_a_platform_role(client, settings, demo, engine):
    acme, globex = demo["tenants"][0]["id"], demo["tenants"][1]["id"]
    with transaction(engine) as session:
        session.execute(models.TriggerQueue.__table__.delete())
    rows = _triggers(engine, acme, globex)
    platform = bearer(make_token(settings, tenants=[acme], roles=OPS, tenant_roles={acme: OPS}))
    stats = client.get("/v1/queue/stats", headers=platform).json()
    assert (_available(stats, "build"), _available(stats, "release")) == (1, 1)
    assert client.get(f"/v1/queue/{rows['platform']}", headers=platform).status_code == 200
    with transaction(engine) as session:
        row = session.get(models.TriggerQueue, rows["platform"])
        assert row is not None and row.tenant_id is None


def test_releases_need_a_platform_role_not_a_tenants(client, settings, demo):
    acme = demo["tenants"][0]["id"]
    tenant_only = make_token(settings, tenants=[acme], roles=[], tenant_roles={acme: ["ops_release"]})
    _problem(client.get("/v1/releases", headers=bearer(tenant_only)), 403, "forbidden")
    platform = make_token(settings, tenants=[acme], roles=["ops_release"], tenant_roles={acme: []})
    assert client.get("/v1/releases", headers=bearer(platform)).status_code == 200
