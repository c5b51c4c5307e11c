"""The workflow and event routes: definitions (validated, versioned), executions (queued,
listed, read, cancelled), consumed events (dedup), and tenancy on every route."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from domain.core.models import TriggerQueue, WorkflowExecution
from domain.core.store import transaction
from tests.api.conftest import bearer, make_token
from tests.api.test_auth import _problem

OPS = ["ops_admin"]


def _step(name: str, depends_on=(), **extra):
    return {
        "name": name,
        "kind": "service_call",
        "service": "ml_service",
        "path": f"/v1/{name}",
        "depends_on": list(depends_on),
        **extra,
    }


def _definition(name: str = "scoring", **extra):
    return {
        "name": name,
        "trigger_on": ["shard.updated"],
        "steps": [
            _step("score", body={"account": {"$ref": "/input/account_id"}}),
            {
                "name": "review",
                "kind": "approval",
                "assignees": ["role:approver"],
                "message": "ok?",
                "timeout": "PT30M",
                "on_timeout": "reject",
                "depends_on": ["score"],
            },
            _step("apply", ["review"], body={"score": {"$ref": "/steps/score/output/value"}}),
            {
                "name": "announce",
                "kind": "publish",
                "queue": "bi_batch_jobs",
                "depends_on": ["apply"],
                "body": {"job": "scoring"},
            },
        ],
        **extra,
    }


@pytest.fixture
def tenants(demo):
    """(the tenant the tests act in, another one). The first demo tenant has seed-demo's workflow."""
    return demo["tenants"][1]["id"], demo["tenants"][0]["id"]


@pytest.fixture
def headers(settings, tenants):
    acme, _ = tenants
    return {**bearer(make_token(settings, tenants=[acme], roles=OPS)), "X-Tenant-ID": acme}


@pytest.fixture
def other_headers(settings, tenants):
    _, globex = tenants
    return {**bearer(make_token(settings, tenants=[globex], roles=OPS)), "X-Tenant-ID": globex}


def _create(client, headers, body=None):
    response = client.post("/v1/workflows", json=body or _definition(), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_definition_is_created_listed_and_read(client, headers):
    created = _create(client, headers)
    assert created["version"] == 1 and created["latest_version"] == 1
    assert [s["name"] for s in created["steps"]] == ["score", "review", "apply", "announce"]
    assert created["steps"][1]["timeout"] == "PT30M"
    listed = client.get("/v1/workflows", headers=headers).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == created["id"]
    assert client.get(f"/v1/workflows/{created['id']}", headers=headers).json() == created


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["steps"][0].update(depends_on=["apply"]), "steps[0].depends_on", "cycle"),
        (lambda d: d["steps"][2].update(depends_on=["nowhere"]), "steps[2].depends_on", "nowhere"),
        (lambda d: d["steps"][0].update(service="billing"), "steps[0].service", ""),
        (lambda d: d["steps"][2].update(body={"x": {"$ref": "input/account_id"}}), "steps[2].body.x", "pointer"),
        (lambda d: d["steps"][0].update(body={"x": {"$ref": "/steps/apply/output"}}), "steps[0].body.x", "apply"),
        (lambda d: d["steps"][1].update(timeout="soon"), "steps[1].timeout", ""),
        (lambda d: d["steps"].append(_step("score")), "steps[4].name", "duplicate"),
        (lambda d: d.update(trigger_on=["user.created"]), "trigger_on[0]", ""),
        # A step's path stays under its service's URL.
        (lambda d: d["steps"][0].update(path="/../../services/forecasting/escaped"), "steps[0].path", "dot segment"),
        (lambda d: d["steps"][0].update(path="/v1/%2e%2E/%2E./forecasting"), "steps[0].path", "dot segment"),
        (lambda d: d["steps"][0].update(path="/v1/%252e%252e/forecasting"), "steps[0].path", "dot segment"),
        (lambda d: d["steps"][2].update(path="/v1/./x"), "steps[2].path", "dot segment"),
        (lambda d: d["steps"][0].update(path="/v1\\..\\x"), "steps[0].path", "backslash"),
        (lambda d: d["steps"][0].update(path="//forecasting.internal/x"), "steps[0].path", "not a URL"),
        (lambda d: d["steps"][0].update(path="/%2F/forecasting.internal/x"), "steps[0].path", "'//'"),
        (lambda d: d["steps"][0].update(path="http://forecasting.internal/x"), "steps[0].path", ""),
        # An approval step's decision fields, and pointers into them.
        (lambda d: d["steps"][1].update(fields=[{"name": "amount", "type": "money"}]), "steps[1].fields[0].type", ""),
        (
            lambda d: d["steps"][1].update(fields=[{"name": "tier", "type": "choice", "options": []}]),
            "steps[1].fields[0].options",
            "non-empty",
        ),
        (
            lambda d: d["steps"][1].update(fields=[{"name": "a", "type": "string"}] * 2),
            "steps[1].fields[1].name",
            "duplicate",
        ),
        (
            lambda d: d["steps"][1].update(fields=[{"name": f"f{i}", "type": "string"} for i in range(21)]),
            "steps[1].fields",
            "DECISION_FIELDS_MAX",
        ),
        (
            lambda d: (
                d["steps"][1].update(fields=[{"name": "amount", "type": "number"}])
                or d["steps"][2].update(body={"x": {"$ref": "/steps/review/output/fields/amout"}})
            ),
            "steps[2].body.x",
            "declares no field 'amout'",
        ),
    ],
)
def test_a_bad_definition_is_422_naming_the_field_and_nothing_is_written(client, headers, mutate, field, words):
    body = _definition()
    mutate(body)
    problem = _problem(client.post("/v1/workflows", json=body, headers=headers), 422, "validation_error")
    fields = [e["field"] for e in problem["errors"]]
    assert field in fields, problem
    assert words in " ".join(e["message"] for e in problem["errors"])
    assert client.get("/v1/workflows", headers=headers).json()["total"] == 0


def test_an_approval_steps_fields_are_kept_as_declared_and_later_steps_may_refer_to_them(client, headers):
    body = _definition()
    body["steps"][1]["fields"] = [
        {"name": "amount", "type": "number", "required": True},
        {"name": "region", "type": "choice", "options": ["eu", "日本"], "default": "日本", "label": "Région"},
    ]
    body["steps"][2]["body"] = {"amount": {"$ref": "/steps/review/output/fields/amount"}}
    created = _create(client, headers, body)
    assert created["steps"][1]["fields"] == [
        {"name": "amount", "type": "number", "label": "amount", "required": True, "default": None, "help": None},
        {
            "name": "region",
            "type": "choice",
            "label": "Région",
            "required": False,
            "options": ["eu", "日本"],
            "default": "日本",
            "help": None,
        },
    ]


def test_a_name_another_workflow_had_in_a_version_is_a_conflict_not_a_server_error(client, headers):
    renamed = _create(client, headers, _definition() | {"name": "first name"})
    client.put(f"/v1/workflows/{renamed['id']}", json=_definition() | {"name": "second name"}, headers=headers)
    # Version 1 of the renamed workflow keeps the name: a new workflow cannot take it.
    taken = client.post("/v1/workflows", json=_definition() | {"name": "first name"}, headers=headers)
    _problem(taken, 409, "conflict")
    other = _create(client, headers, _definition() | {"name": "other"})
    _problem(
        client.put(f"/v1/workflows/{other['id']}", json=_definition() | {"name": "first name"}, headers=headers),
        409,
        "conflict",
    )
    # The workflow itself may take back a name it had.
    back = client.put(f"/v1/workflows/{renamed['id']}", json=_definition() | {"name": "first name"}, headers=headers)
    assert back.status_code == 200, back.text


def test_an_execution_body_that_is_not_an_object_is_refused(client, headers):
    created = _create(client, headers)
    for body in (b"null", b"[]", b'"x"'):
        response = client.post(
            f"/v1/workflows/{created['id']}/executions",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        _problem(response, 422, "validation_error")
    empty = client.post(f"/v1/workflows/{created['id']}/executions", headers=headers)
    assert empty.status_code == 202, empty.text


def test_put_makes_a_new_version_and_executions_keep_theirs(client, headers, engine):
    created = _create(client, headers)
    started = client.post(
        f"/v1/workflows/{created['id']}/executions", json={"input": {"account_id": "a"}}, headers=headers
    )
    assert started.status_code == 202
    first = started.json()
    assert first["status"] == "queued" and first["version"] == 1

    changed = _definition()
    changed["steps"] = changed["steps"][:1]
    updated = client.put(f"/v1/workflows/{created['id']}", json=changed, headers=headers).json()
    assert updated["version"] == 2 and [s["name"] for s in updated["steps"]] == ["score"]
    old = client.get(f"/v1/workflows/{created['id']}?version=1", headers=headers).json()
    assert len(old["steps"]) == 4

    execution = client.get(f"/v1/workflow-executions/{first['execution_id']}", headers=headers).json()
    assert execution["version"] == 1 and len(execution["steps"]) == 4
    assert execution["progress"] == {"total": 4, "done": 0, "failed": 0, "waiting": 0}
    second = client.post(f"/v1/workflows/{created['id']}/executions", json={}, headers=headers).json()
    assert second["version"] == 2
    with transaction(engine) as session:
        kinds = session.scalars(select(TriggerQueue.kind).where(TriggerQueue.tenant_id == execution["tenant_id"])).all()
    assert kinds.count("workflow") == 2


def test_executions_are_listed_by_status_and_workflow_and_cancelled(client, headers):
    a = _create(client, headers)
    b = _create(client, headers, _definition("other"))
    ids = [
        client.post(f"/v1/workflows/{w['id']}/executions", json={}, headers=headers).json()["execution_id"]
        for w in (a, a, b)
    ]
    page = client.get(f"/v1/workflow-executions?workflow_id={a['id']}&limit=1", headers=headers).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    cancelled = client.post(f"/v1/workflow-executions/{ids[0]}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert {s["status"] for s in cancelled.json()["steps"]} == {"cancelled"}
    again = _problem(
        client.post(f"/v1/workflow-executions/{ids[0]}/cancel", headers=headers), 409, "invalid_status_transition"
    )
    assert "cancelled" in again["detail"]
    queued = client.get("/v1/workflow-executions?status=queued", headers=headers).json()
    assert {e["id"] for e in queued["items"]} == {ids[1], ids[2]}
    _problem(client.get("/v1/workflow-executions?status=paused", headers=headers), 422, "validation_error")


def test_every_workflow_route_needs_x_tenant_id_and_sees_only_its_tenant(
    client, settings, headers, other_headers, tenants
):
    created = _create(client, headers)
    execution = client.post(f"/v1/workflows/{created['id']}/executions", json={}, headers=headers).json()[
        "execution_id"
    ]
    routes = [
        ("GET", "/v1/workflows", None),
        ("POST", "/v1/workflows", _definition("x")),
        ("GET", f"/v1/workflows/{created['id']}", None),
        ("PUT", f"/v1/workflows/{created['id']}", _definition()),
        ("POST", f"/v1/workflows/{created['id']}/executions", {}),
        ("GET", "/v1/workflow-executions", None),
        ("GET", f"/v1/workflow-executions/{execution}", None),
        ("POST", f"/v1/workflow-executions/{execution}/cancel", None),
    ]
    _acme, globex = tenants
    no_header = {k: v for k, v in headers.items() if k != "X-Tenant-ID"}
    not_mine = {**headers, "X-Tenant-ID": globex}
    for method, path, body in routes:
        missing = _problem(client.request(method, path, json=body, headers=no_header), 400, "tenant_required")
        assert missing["errors"][0]["field"] == "X-Tenant-ID"
        _problem(client.request(method, path, json=body, headers=not_mine), 403, "forbidden")
    # another tenant's rows are not found
    for method, path, body in routes[2:5] + routes[6:]:
        _problem(client.request(method, path, json=body, headers=other_headers), 404, "not_found")
    assert client.get("/v1/workflow-executions", headers=other_headers).json()["total"] == 0
    assert created["id"] not in {w["id"] for w in client.get("/v1/workflows", headers=other_headers).json()["items"]}


def _event(tenant: str, type_: str = "shard.updated", event_id: str | None = None):
    return {
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "tenant_id": tenant,
        "occurred_at": "2026-11-23T08:00:00Z",
        "data": {"shard": "s-1"},
    }


def test_an_event_starts_one_execution_per_matching_workflow_and_a_repeat_is_a_duplicate(
    client, settings, headers, tenants, engine
):
    acme, _ = tenants
    matching = _create(client, headers)
    _create(client, headers, _definition("on-opportunities", trigger_on=["integration.opportunity.updated"]))
    inactive = _create(client, headers, _definition("inactive", active=False))
    service = bearer(make_token(settings, tenants=[], roles=["service"], sub="svc-shards"))
    event = _event(acme)

    first = client.post("/v1/events", json=event, headers=service)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted" and len(first.json()["executions"]) == 1
    execution = client.get(f"/v1/workflow-executions/{first.json()['executions'][0]}", headers=headers).json()
    assert execution["workflow_id"] == matching["id"]
    assert execution["trigger"]["event_id"] == event["id"]
    assert execution["input"]["event"]["data"] == {"shard": "s-1"}
    assert execution["input"]["shard"] == "s-1"  # the data is the input, as an API start's body is

    again = client.post("/v1/events", json=event, headers=service)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True and again.json()["executions"] == first.json()["executions"]
    with transaction(engine) as session:
        count = session.scalar(
            select(func.count()).select_from(WorkflowExecution).where(WorkflowExecution.tenant_id == acme)
        )
    assert count == 1
    assert inactive["active"] is False


def test_the_same_event_id_from_two_tenants_starts_each_tenants_own_executions(
    client, settings, headers, other_headers, tenants
):
    acme, globex = tenants
    acme_workflow = _create(client, headers)
    globex_workflow = _create(client, other_headers)
    service = bearer(make_token(settings, tenants=[], roles=["service"]))
    event_id = f"shard-{uuid.uuid4()}"

    answers = {}
    for tenant, tenant_headers in ((acme, headers), (globex, other_headers)):
        response = client.post("/v1/events", json=_event(tenant, event_id=event_id), headers=service)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "accepted"
        answers[tenant] = response.json()["executions"]
        for execution_id in answers[tenant]:
            execution = client.get(f"/v1/workflow-executions/{execution_id}", headers=tenant_headers)
            assert execution.status_code == 200  # the tenant's own execution, readable in its tenant
    assert acme_workflow["id"] in _workflow_ids(client, headers, answers[acme])
    assert globex_workflow["id"] in _workflow_ids(client, other_headers, answers[globex])
    assert not set(answers[acme]) & set(answers[globex])

    again = client.post("/v1/events", json=_event(globex, event_id=event_id), headers=service)
    assert again.status_code == 200 and again.json()["executions"] == answers[globex]


def _workflow_ids(client, headers, execution_ids):
    return {client.get(f"/v1/workflow-executions/{e}", headers=headers).json()["workflow_id"] for e in execution_ids}


def test_events_refuse_unknown_types_and_callers_without_the_role(client, settings, tenants):
    acme, globex = tenants
    service = bearer(make_token(settings, tenants=[], roles=["service"]))
    problem = _problem(
        client.post("/v1/events", json=_event(acme, "user.created"), headers=service), 422, "validation_error"
    )
    assert problem["errors"][0]["field"] == "type"
    viewer = bearer(make_token(settings, tenants=[acme], roles=["viewer"]))
    _problem(client.post("/v1/events", json=_event(acme), headers=viewer), 403, "forbidden")
    ops_in_acme = bearer(make_token(settings, tenants=[acme], roles=OPS))
    _problem(client.post("/v1/events", json=_event(globex), headers=ops_in_acme), 403, "forbidden")
    assert client.post("/v1/events", json=_event(acme), headers=ops_in_acme).status_code == 202


def test_seed_demo_adds_the_account_review_workflow_once(client, other_headers, engine):
    from cli.demo import reset_demo, seed_demo

    with transaction(engine) as session:
        seed_demo(session)
    with transaction(engine) as session:
        reset_demo(session)
    listed = client.get("/v1/workflows", headers=other_headers).json()
    assert listed["total"] == 1
    demo = listed["items"][0]
    assert demo["name"] == "account-review"
    assert [s["kind"] for s in demo["steps"]] == ["service_call", "service_call", "approval", "publish"]
