"""The HITL routes: tenancy, who may decide, exactly one decision, standalone requests, signed links."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from api.app import create_app
from domain.core.models import AuditLog, HitlApproval, HitlApprovalCallback, Notification, TriggerQueue
from domain.core.store import transaction
from domain.workflows import approvals
from domain.workflows.approval_links import sign
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.domain.test_approvals import execution, member

PREFIXES = ["/hitl", "/v1/hitl"]


@pytest.fixture
def world(engine, settings):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        other = factories.tenant(session)
        alice = member(session, tenant.id, ["approver"], "alice")
        carol = member(session, tenant.id, ["approver"], "carol")
        stranger = member(session, other.id, ["approver", "ops_admin"], "stranger")
        run = execution(session, tenant.id)
        approval = approvals.open_approval(
            session,
            tenant_id=tenant.id,
            requested_by="workflow_engine",
            assignees=[alice.id, "role:finance"],
            message="Pay the invoice?",
            timeout=dt.timedelta(hours=1),
            on_timeout="reject",
            workflow_execution_id=run.id,
            step_name="pay",
            settings=settings,
        )
        ids = {
            "tenant": tenant.id,
            "other": other.id,
            "alice": alice.id,
            "carol": carol.id,
            "stranger": stranger.id,
            "execution": run.id,
            "approval": approval.id,
        }

    def headers(user: str, roles: list[str], tenant: str | None = None, header: str | None = "same"):
        tenant = tenant or ids["tenant"]
        h = bearer(make_token(settings, tenants=[tenant], roles=roles, sub=ids.get(user, user)))
        if header == "same":
            h["X-Tenant-ID"] = tenant
        elif header:
            h["X-Tenant-ID"] = header
        return h

    ids["headers"] = headers
    return ids


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_hitl_route_needs_x_tenant_id(client, world, prefix):
    h = world["headers"]("alice", ["approver"], header=None)
    a = world["approval"]
    for method, path, body in [
        ("GET", f"{prefix}/approvals", None),
        ("GET", f"{prefix}/approvals/{a}", None),
        ("POST", f"{prefix}/approvals", {"message": "m", "assignees": ["x"]}),
        ("POST", f"{prefix}/approvals/{a}/decision", {"decision": "approve"}),
    ]:
        response = client.request(method, path, headers=h, json=body)
        assert response.status_code == 400, path
        problem = response.json()
        assert problem["code"] == "tenant_required"
        assert problem["errors"] == [{"field": "X-Tenant-ID", "message": "header required"}]


def test_a_tenant_that_is_not_the_tokens_is_403(client, world):
    h = world["headers"]("alice", ["approver"], header=world["other"])
    assert client.get("/hitl/approvals", headers=h).json()["code"] == "forbidden"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_another_tenants_approval_is_not_found(client, world, prefix):
    h = world["headers"]("stranger", ["approver", "ops_admin"], tenant=world["other"])
    a = world["approval"]
    assert client.get(f"{prefix}/approvals/{a}", headers=h).status_code == 404
    response = client.post(f"{prefix}/approvals/{a}/decision", headers=h, json={"decision": "approve"})
    assert response.status_code == 404
    assert client.get(f"{prefix}/approvals", headers=h).json()["items"] == []


def test_a_non_assignee_may_not_decide(client, engine, world):
    h = world["headers"]("carol", ["approver"])
    response = client.post(f"/hitl/approvals/{world['approval']}/decision", headers=h, json={"decision": "approve"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    with transaction(engine) as session:
        assert session.get(HitlApproval, world["approval"]).status == "pending"


def test_an_assignee_approves_audited_and_the_execution_continuation_is_queued(client, engine, world):
    h = world["headers"]("alice", ["approver"])
    response = client.post(
        f"/v1/hitl/approvals/{world['approval']}/decision",
        headers=h,
        json={"decision": "approve", "comment": "looks right"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["outcome"], body["decided_by"]) == ("approved", "approve", world["alice"])
    assert body["decision_comment"] == "looks right" and body["decided_at"]
    detail = client.get(f"/hitl/approvals/{world['approval']}", headers=h).json()
    decided = [a for a in detail["audit"] if a["action"] == "approval_decided"]
    assert len(decided) == 1
    assert decided[0]["actor_id"] == world["alice"] and decided[0]["metadata"]["comment"] == "looks right"
    assert (decided[0]["previous_status"], decided[0]["new_status"]) == ("pending", "approved")
    with transaction(engine) as session:
        trigger = session.scalars(select(TriggerQueue).where(TriggerQueue.kind == "approval")).one()
        assert trigger.dedup_key == f"approval:{world['approval']}"
        assert trigger.tenant_id == world["tenant"]
        assert trigger.payload == {
            "tenant_id": world["tenant"],
            "hitl_approval_id": world["approval"],
            "workflow_execution_id": world["execution"],
            "outcome": "approve",
        }


def test_ops_admin_may_decide_without_being_assigned(client, world):
    h = world["headers"]("ops-9", ["ops_admin"])
    response = client.post(f"/hitl/approvals/{world['approval']}/decision", headers=h, json={"decision": "reject"})
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"


def test_a_second_decision_is_409_naming_the_current_state(client, engine, world):
    h = world["headers"]("alice", ["approver"])
    path = f"/hitl/approvals/{world['approval']}/decision"
    assert client.post(path, headers=h, json={"decision": "reject"}).status_code == 200
    again = client.post(path, headers=world["headers"]("ops-9", ["admin"]), json={"decision": "approve"})
    assert again.status_code == 409
    problem = again.json()
    assert problem["code"] == "approval_already_decided"
    assert (problem["current_status"], problem["outcome"], problem["decided_by"]) == (
        "rejected",
        "reject",
        world["alice"],
    )
    assert "already rejected" in problem["detail"]
    with transaction(engine) as session:
        assert session.get(HitlApproval, world["approval"]).outcome == "reject"
        assert len(session.scalars(select(TriggerQueue)).all()) == 1


def test_a_decision_after_expiry_is_409_expired_and_applies_on_timeout(client, engine, world):
    with transaction(engine) as session:
        session.execute(
            update(HitlApproval)
            .where(HitlApproval.id == world["approval"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    h = world["headers"]("alice", ["approver"])
    response = client.post(f"/hitl/approvals/{world['approval']}/decision", headers=h, json={"decision": "approve"})
    assert response.status_code == 409
    assert (response.json()["current_status"], response.json()["outcome"]) == ("expired", "reject")
    with transaction(engine) as session:
        row = session.get(HitlApproval, world["approval"])
        assert (row.status, row.outcome, row.decided_by) == ("expired", "reject", None)
        trigger = session.scalars(select(TriggerQueue)).one()
        assert trigger.payload["outcome"] == "reject"


def test_list_filters_and_pages_newest_first(client, world):
    h = world["headers"]("carol", ["approver"])
    created = []
    for n in range(3):
        response = client.post(
            "/hitl/approvals",
            headers=world["headers"]("svc", ["service"]),
            json={"message": f"standalone {n}", "assignees": ["role:approver"], "timeout": "PT2H"},
        )
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    first = client.get("/hitl/approvals?mine=true&limit=2", headers=h).json()
    assert [a["id"] for a in first["items"]] == created[::-1][:2]
    rest = client.get(f"/hitl/approvals?mine=true&limit=2&offset={first['next_offset']}", headers=h).json()
    assert [a["id"] for a in rest["items"]] == created[:1] and rest["next_offset"] is None
    # alice is assigned by id to the workflow's approval only.
    mine = client.get("/v1/hitl/approvals?mine=true", headers=world["headers"]("alice", ["viewer", "approver"]))
    assert {a["id"] for a in mine.json()["items"]} == {world["approval"], *created}
    of_run = client.get(f"/hitl/approvals?execution_id={world['execution']}", headers=h).json()
    assert [a["id"] for a in of_run["items"]] == [world["approval"]]
    assert client.get("/hitl/approvals?status=approved", headers=h).json()["items"] == []
    bad = client.get("/hitl/approvals?status=maybe", headers=h)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


def test_a_standalone_request_is_validated_naming_the_field(client, engine, world):
    h = world["headers"]("svc", ["service"])
    for body, field in [
        ({"message": "m", "assignees": []}, "assignees"),
        ({"message": "m", "assignees": ["u"], "timeout": "soon"}, "timeout"),
        ({"message": "m", "assignees": ["u"], "timeout": "-PT1H"}, "timeout"),
        ({"message": "m", "assignees": ["u"], "on_timeout": "maybe"}, "on_timeout"),
        ({"message": "m", "assignees": ["u"], "callback_url": "not a url"}, "callback_url"),
        ({"message": "m", "assignees": ["u"], "extra": 1}, "extra"),
    ]:
        response = client.post("/hitl/approvals", headers=h, json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field
    # An approver may not open requests.
    response = client.post(
        "/hitl/approvals", headers=world["headers"]("carol", ["approver"]), json={"message": "m", "assignees": ["u"]}
    )
    assert response.status_code == 403
    with transaction(engine) as session:
        assert len(session.scalars(select(HitlApproval)).all()) == 1  # only the fixture's


def _link(settings, engine, approval_id: str, user_id: str, decision: str) -> str:
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        return sign(settings, row, user_id, decision)


def test_the_emailed_link_shows_a_page_then_decides_once_then_is_gone(client, engine, settings, world):
    with transaction(engine) as session:
        email = session.scalars(
            select(Notification).where(Notification.channel == "email", Notification.recipient.like("alice-%"))
        ).one()
        url = email.payload["approve_url"]
    assert url.startswith(settings.hitl_link_base_url + "/hitl/approval-links?token=")
    path = url[len(settings.hitl_link_base_url) :]
    shown = client.get(path, headers={"Accept": "text/html"})
    assert shown.status_code == 200 and "text/html" in shown.headers["content-type"]
    assert "Pay the invoice?" in shown.text and '<form method="post"' in shown.text
    with transaction(engine) as session:
        assert session.get(HitlApproval, world["approval"]).status == "pending"  # GET decides nothing
    used = client.post(path, data={"comment": "ok from my inbox"})
    assert used.status_code == 200 and "approved" in used.text
    with transaction(engine) as session:
        row = session.get(HitlApproval, world["approval"])
        assert (row.status, row.decided_by, row.decision_comment) == ("approved", world["alice"], "ok from my inbox")
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "approval_decided")).one()
        assert audit.details["via"] == "signed_link"
    again = client.post(path, data={})
    assert again.status_code == 410
    assert again.json()["code"] == "link_used" and again.json()["current_status"] == "approved"
    assert client.get(path).status_code == 410
    # The other decision's link of the same approval is gone too.
    reject = _link(settings, engine, world["approval"], world["alice"], "reject")
    assert client.post(f"/v1/hitl/approval-links?token={reject}").status_code == 410


def test_a_tampered_link_is_401_and_decides_nothing(client, engine, settings, world):
    token = _link(settings, engine, world["approval"], world["alice"], "approve")
    header, _claims, signature = token.split(".")
    forged = _link(settings, engine, world["approval"], world["alice"], "reject").split(".")[1]
    for bad in [
        f"{header}.{forged}.{signature}",
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        "nonsense",
    ]:
        response = client.post(f"/hitl/approval-links?token={bad}")
        assert response.status_code == 401, bad
        assert response.json()["code"] == "invalid_link"
    other_key = settings.model_copy(update={"hitl_link_secret": type(settings.hitl_link_secret)("x" * 40)})
    with transaction(engine) as session:
        foreign = sign(other_key, session.get(HitlApproval, world["approval"]), world["alice"], "approve")
    assert client.post(f"/hitl/approval-links?token={foreign}").status_code == 401
    with transaction(engine) as session:
        assert session.get(HitlApproval, world["approval"]).status == "pending"


def test_an_expired_link_is_410(client, engine, settings, world):
    token = _link(settings, engine, world["approval"], world["alice"], "approve")
    with transaction(engine) as session:
        row = session.get(HitlApproval, world["approval"])
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
        stale = sign(settings, row, world["alice"], "approve")
        session.rollback()
    response = client.post(f"/hitl/approval-links?token={stale}")
    assert response.status_code == 410 and response.json()["code"] == "link_expired"
    assert client.get(f"/hitl/approval-links?token={token}").status_code == 200


def test_a_link_for_someone_no_longer_assigned_is_refused(client, engine, settings, world):
    token = _link(settings, engine, world["approval"], world["carol"], "approve")
    response = client.post(f"/hitl/approval-links?token={token}")
    assert response.status_code == 403


def test_a_callback_url_must_name_an_allowed_host_when_hosts_are_listed(engine, settings, world):
    from domain.workflows.approvals import callback_host_allowed

    assert callback_host_allowed("anything.example", [])  # none listed: any host
    allowed = ["billing.internal", ".corp.example"]
    assert callback_host_allowed("billing.internal", allowed) and callback_host_allowed("BILLING.internal.", allowed)
    assert callback_host_allowed("a.corp.example", allowed) and callback_host_allowed("b.a.corp.example", allowed)
    assert not callback_host_allowed("evilcorp.example", allowed)  # not under ".corp.example"
    assert not callback_host_allowed("corp.example", allowed) and not callback_host_allowed("169.254.169.254", allowed)

    listed = settings.model_copy(update={"approval_callback_hosts": allowed})
    with TestClient(create_app(listed, engine), raise_server_exceptions=False) as client:
        h = world["headers"]("svc", ["service"])
        body = {"message": "m", "assignees": ["u"], "callback_url": "http://169.254.169.254/latest/meta-data"}
        refused = client.post("/hitl/approvals", headers=h, json=body)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "callback_url"
        assert "APPROVAL_CALLBACK_HOSTS" in refused.json()["errors"][0]["message"]
        with transaction(engine) as session:
            assert len(session.scalars(select(HitlApproval)).all()) == 1  # nothing written: only the fixture's
        body["callback_url"] = "https://hooks.corp.example/approvals"
        assert client.post("/hitl/approvals", headers=h, json=body).status_code == 201


FIELDS = [
    {"name": "amount", "type": "number", "label": "Amount (€)", "required": True},
    {"name": "urgent", "type": "boolean", "default": False},
    {"name": "region", "type": "choice", "options": ["eu", "日本"], "default": "eu"},
    {"name": "note", "type": "string", "help": "shown under the input"},
]


def test_a_standalone_request_declares_fields_and_its_decision_carries_their_values(client, engine, world):
    opened = client.post(
        "/hitl/approvals",
        headers=world["headers"]("svc", ["service"]),
        json={
            "message": "Refund?",
            "assignees": ["role:approver"],
            "fields": FIELDS,
            "callback_url": "http://127.0.0.1:9/hook",
        },
    )
    assert opened.status_code == 201, opened.text
    approval = opened.json()
    assert [f["name"] for f in approval["fields"]] == ["amount", "urgent", "region", "note"]
    assert approval["fields"][0]["label"] == "Amount (€)" and approval["fields"][1]["label"] == "urgent"
    assert approval["field_values"] is None
    h = world["headers"]("carol", ["approver"])
    decision = f"/v1/hitl/approvals/{approval['id']}/decision"
    for values, field in [
        ({}, "fields.amount"),
        ({"amount": "12"}, "fields.amount"),
        ({"amount": 12, "region": "mars"}, "fields.region"),
        ({"amount": 12, "urgent": "yes"}, "fields.urgent"),
        ({"amount": 12, "colour": "red"}, "fields.colour"),
    ]:
        refused = client.post(decision, headers=h, json={"decision": "approve", "fields": values})
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["code"] == "validation_error" and [e["field"] for e in problem["errors"]] == [field]
    bad_shape = client.post(decision, headers=h, json={"decision": "approve", "fields": [1]})
    assert bad_shape.status_code == 422 and bad_shape.json()["errors"][0]["field"] == "fields"
    decided = client.post(
        decision, headers=h, json={"decision": "approve", "comment": "ok", "fields": {"amount": 12.5, "note": "für 🎉"}}
    )
    assert decided.status_code == 200, decided.text
    values = {"amount": 12.5, "urgent": False, "region": "eu", "note": "für 🎉"}
    assert decided.json()["field_values"] == values
    shown = client.get(f"/hitl/approvals/{approval['id']}", headers=h).json()
    assert shown["field_values"] == values and shown["fields"] == approval["fields"]
    assert [a["metadata"].get("fields") for a in shown["audit"] if a["action"] == "approval_decided"] == [values]
    listed = client.get("/hitl/approvals?status=approved", headers=h).json()["items"]
    assert [(a["id"], a["field_values"]) for a in listed] == [(approval["id"], values)]
    with transaction(engine) as session:
        callback = session.scalars(
            select(HitlApprovalCallback).where(HitlApprovalCallback.hitl_approval_id == approval["id"])
        ).one()
        assert callback.body["field_values"] == values and callback.body["fields"] == approval["fields"]


def test_a_standalone_requests_bad_field_declaration_is_422_naming_its_path(client, engine, world):
    h = world["headers"]("svc", ["service"])
    for fields, path in [
        ([{"name": "amount", "type": "money"}], "fields[0].type"),
        ([{"name": "9lives", "type": "string"}], "fields[0].name"),
        ([{"name": "tier", "type": "choice", "options": ["a", "a"]}], "fields[0].options[1]"),
        ([{"name": "n", "type": "number", "default": "3"}], "fields[0].default"),
        ({"name": "n"}, "fields"),
    ]:
        body = {"message": "m", "assignees": ["u"], "fields": fields}
        response = client.post("/hitl/approvals", headers=h, json=body)
        assert response.status_code == 422, fields
        assert [e["field"] for e in response.json()["errors"]] == [path]
    with transaction(engine) as session:
        assert len(session.scalars(select(HitlApproval)).all()) == 1  # only the fixture's


def test_a_rejection_needs_no_required_field(client, world):
    opened = client.post(
        "/hitl/approvals",
        headers=world["headers"]("svc", ["service"]),
        json={"message": "Refund?", "assignees": ["role:approver"], "fields": FIELDS},
    ).json()
    rejected = client.post(
        f"/hitl/approvals/{opened['id']}/decision",
        headers=world["headers"]("carol", ["approver"]),
        json={"decision": "reject", "fields": {"note": "too much"}},
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["field_values"] == {"amount": None, "urgent": False, "region": "eu", "note": "too much"}
