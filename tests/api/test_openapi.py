"""/openapi.json states what the routes enforce, and a 405 names every method of its path."""

from __future__ import annotations

import pytest

from api.app import ENDPOINTS
from api.openapi import openapi_path
from tests.api.conftest import bearer, make_token
from tests.api.test_auth import _problem

PATHS = sorted({endpoint.path for endpoint in ENDPOINTS})


@pytest.mark.parametrize("path", PATHS)
def test_a_405_names_every_method_its_path_takes(client, path):
    methods = {endpoint.method for endpoint in ENDPOINTS if endpoint.path == path}
    url = path.replace("{", "").replace("}", "")  # any value for each path parameter
    response = client.request("DELETE", url)
    _problem(response, 405, "method_not_allowed")
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == methods | ({"HEAD"} if "GET" in methods else set())


def _operation(spec, method, path):
    return spec["paths"][path][method]


def _parameter(operation, name):
    [parameter] = [p for p in operation["parameters"] if p["name"] == name]
    return parameter


def test_parameters_are_typed_and_bounded_as_the_code_reads_them(client):
    spec = client.get("/openapi.json").json()
    workflows = _operation(spec, "get", "/v1/workflows")
    assert _parameter(workflows, "limit")["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert _parameter(workflows, "X-Tenant-ID")["required"] is True
    phase = _operation(spec, "post", "/api/v1/workflow/phase/{phaseNumber}")
    assert _parameter(phase, "phaseNumber")["schema"] == {"type": "integer", "minimum": 1, "maximum": 7}
    messages = _operation(spec, "get", "/v1/batch-jobs/messages")
    assert {"model-monitoring", "model_monitoring"} <= set(_parameter(messages, "job")["schema"]["enum"])
    trigger = _operation(spec, "get", "/v1/queue/{trigger_id}")
    assert _parameter(trigger, "trigger_id")["schema"]["type"] == "integer"


def test_bodies_and_every_answer_are_documented(client):
    spec = client.get("/openapi.json").json()
    event = _operation(spec, "post", "/v1/events")
    assert event["requestBody"]["required"] is True
    assert event["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventIn"}
    accepted = {"$ref": "#/components/schemas/EventAccepted"}
    assert event["responses"]["202"]["content"]["application/json"]["schema"] == accepted
    assert event["responses"]["200"]["content"]["application/json"]["schema"] == accepted  # a duplicate
    for status in ("401", "403", "413", "415", "422"):
        assert "application/problem+json" in event["responses"][status]["content"]
    decision = _operation(spec, "post", "/hitl/approvals/{approval_id}/decision")
    conflict = decision["responses"]["409"]["content"]["application/problem+json"]["schema"]
    assert conflict["allOf"][1] == {"properties": {"code": {"enum": ["approval_already_decided"]}}}
    packet = _operation(spec, "get", "/v1/users/{user_id}/proof-packets/{packet_id}")
    assert set(packet["responses"]["200"]["content"]) == {"application/pdf", "application/json"}
    assert "text/event-stream" in _operation(spec, "get", "/v1/users/{user_id}/events")["responses"]["200"]["content"]
    ready = _operation(spec, "get", "/ready")["responses"]["503"]["content"]["application/json"]
    assert ready["schema"] == {"$ref": "#/components/schemas/Readiness"}
    documented = {(openapi_path(e.path), e.method.lower()) for e in ENDPOINTS}
    assert documented == {(p, m) for p, ops in spec["paths"].items() for m in ops}


def test_a_json_body_sent_as_another_media_type_is_415(client, settings, demo):
    tenant = demo["tenants"][0]["id"]
    headers = {**bearer(make_token(settings, tenants=[tenant], roles=["service"])), "X-Tenant-ID": tenant}
    body = b'{"user_id": "u1"}'
    for media in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post("/api/v1/workflow/phase/1", content=body, headers={**headers, "Content-Type": media})
        _problem(response, 415, "unsupported_media_type")
    sent = client.post(
        "/api/v1/workflow/phase/1", content=body, headers={**headers, "Content-Type": "application/json; charset=utf-8"}
    )
    assert sent.status_code == 202, sent.text


def test_an_empty_query_value_is_refused_not_taken_for_the_default(client, settings, demo):
    tenant = demo["tenants"][0]["id"]
    headers = {**bearer(make_token(settings, tenants=[tenant], roles=["ops_admin"])), "X-Tenant-ID": tenant}
    for url in ("/v1/workflows?limit=", "/hitl/approvals?status=", "/hitl/approvals?mine="):
        _problem(client.get(url, headers=headers), 422, "validation_error")
