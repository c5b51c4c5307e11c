from __future__ import annotations

from starlette.routing import Route

from domain.core import logs
from tests.api.conftest import bearer, make_token


def test_unknown_route_and_wrong_method_are_problems(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = client.post("/health")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_unexpected_error_is_a_500_problem_without_a_stack_trace(client):
    async def boom(_request):
        raise RuntimeError("secret internals")

    client.app.router.routes.append(Route("/boom", boom))
    response = client.get("/boom", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error" and body["request_id"] == "req-123"
    assert "secret internals" not in response.text and "Traceback" not in response.text


def test_request_id_is_echoed_and_access_log_names_tenant_and_actor(client, settings, caplog):
    import json
    import logging

    caplog.set_level(logging.INFO, logger="wrk.api.access")
    token = make_token(settings, tenants=["t1"], roles=["ops_admin"], sub="olivia")
    response = client.get("/v1/automation-versions/x", headers={**bearer(token), "X-Request-ID": "abc-1"})
    assert response.headers["x-request-id"] == "abc-1"
    line = logs.formatter("api")
    [entry] = [json.loads(line.format(r)) for r in caplog.records if r.name == "wrk.api.access"]
    assert entry["request_id"] == "abc-1" and entry["status"] == 404 and entry["service"] == "api"
    assert entry["message"] == "GET /v1/automation-versions/x 404" and entry["level"] == "info" and entry["time"]
    assert entry["tenant_id"] == "t1" and entry["actor"] == "olivia"


def test_openapi_lists_every_route_with_schemas(client):
    spec = client.get("/openapi.json").json()
    # WebSocket routes (live updates) have no HTTP methods and no place in OpenAPI; the inbox's pages are for
    # browsers (form posts with a session cookie), declared outside the document.
    routes = {
        (r.path, m)
        for r in client.app.router.routes
        if getattr(r, "include_in_schema", True)
        for m in (getattr(r, "methods", None) or [])
        if m != "HEAD"
    }
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented
    version = spec["paths"]["/v1/automation-versions/{version_id}"]["get"]
    assert version["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("AutomationVersionOut")
    assert "application/problem+json" in version["responses"]["404"]["content"]
