"""The request rules every route keeps (api/request_rules.py), each on the routes where it was once a 500
or went unbounded: JSON depth, integers the store holds, header values, NUL in every text field (422
naming the field), body limits (413 while reading, before the signature), matches per phase-4 POST and
amounts in the currency's minor unit."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from api.app import create_app
from cli.demo import DEMO_WORKFLOW
from domain.core.models import HitlApproval, TriggerQueue, Workflow
from domain.core.settings import Settings
from domain.core.store import transaction
from tests.api.conftest import bearer, make_token

BODY_LIMIT = 256 * 1024  # past the 200 kB of DEEP
WEBHOOK_LIMIT = 512 * 1024
MAX_MATCHES = 5
ROLES = ["admin", "ops_admin", "service", "workflow_operator"]
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def settings() -> Settings:
    return Settings(
        environment="test",
        request_body_max_bytes=BODY_LIMIT,
        webhook_body_max_bytes=WEBHOOK_LIMIT,
        phase_max_matches=MAX_MATCHES,
    )


@pytest.fixture
def tenant(demo) -> str:
    tenant_id: str = demo["tenants"][0]["id"]
    return tenant_id


@pytest.fixture
def headers(settings, tenant) -> dict[str, str]:
    return {**bearer(make_token(settings, tenants=[tenant], roles=ROLES)), "X-Tenant-ID": tenant}


def refused(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem


def count(engine, model: Any) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _signed(settings: Settings, body: bytes, event: str = "release", delivery: str = "d-1") -> dict[str, str]:
    digest = hmac.new(settings.github_webhook_secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}


# -- JSON: depth, integers, numbers -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/workflow/phase/1", "/v1/workflows"])
def test_json_nested_past_the_depth_limit_is_422(client, headers, path):
    refused(client.post(path, content=DEEP, headers=headers), 422, "validation_error", "body")


def test_json_at_the_depth_limit_is_read(client, headers, settings):
    depth = settings.request_json_max_depth
    nested: Any = "v"
    for _ in range(depth - 1):  # the body object itself is the first level
        nested = [nested]
    within = client.post("/api/v1/workflow/phase/1", json={"user_id": "u", "note": nested}, headers=headers)
    assert within.status_code == 202, within.text
    past = client.post("/api/v1/workflow/phase/1", json={"user_id": "u", "note": [nested]}, headers=headers)
    refused(past, 422, "validation_error", "body")


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"message": "m", "assignees": ["a"], "context": {"n": 9223372036854775808}}', "context.n"),
        (b'{"message": "m", "assignees": ["a"], "context": {"n": [1, -9223372036854775809]}}', "context.n.1"),
        (b'{"message": "m", "assignees": ["a"], "context": {"x": 1e400}}', "context.x"),
        (b'{"message": "m", "assignees": ["a"], "context": {"x": -1.1e52}}', "context.x"),
        (b'{"message": "m", "assignees": ["a"], "context": {"x": 9.3e18}}', "context.x"),
        (b'{"message": "m", "assignees": ["a"], "context": {"x": NaN}}', "body"),
    ],
)
def test_numbers_the_store_cannot_hold_are_422_naming_the_field(client, headers, engine, raw, field):
    before = count(engine, HitlApproval)
    refused(client.post("/v1/hitl/approvals", content=raw, headers=headers), 422, "validation_error", field)
    assert count(engine, HitlApproval) == before


def test_integers_are_kept_to_the_64_bit_range(client, headers):
    context = {"max": 2**63 - 1, "min": -(2**63)}
    kept = client.post(
        "/v1/hitl/approvals", json={"message": "m", "assignees": ["a"], "context": context}, headers=headers
    )
    assert kept.status_code == 201, kept.text
    assert client.get(f"/v1/hitl/approvals/{kept.json()['id']}", headers=headers).json()["context"] == context
    past = {"message": "m", "assignees": ["a"], "context": {"max": 2**63}}
    refused(client.post("/v1/hitl/approvals", json=past, headers=headers), 422, "validation_error", "context.max")


def test_a_fraction_or_exponent_within_the_64_bit_range_is_kept(client, headers):
    raw = b'{"message": "m", "assignees": ["a"], "context": {"a": 9.2e18, "b": -1.5e-300, "c": 0.5}}'
    kept = client.post("/v1/hitl/approvals", content=raw, headers={**headers, "Content-Type": "application/json"})
    assert kept.status_code == 201, kept.text


# -- integers in paths and queries ---------------------------------------------------------------------


@pytest.mark.parametrize("trigger_id", ["99999999999999999999999999", "9223372036854775808", "²", "9" * 5000])
def test_a_trigger_id_past_the_store_is_not_found(client, headers, trigger_id):
    refused(client.get(f"/v1/queue/{trigger_id}", headers=headers), 404, "not_found")
    refused(client.post(f"/v1/queue/{trigger_id}/requeue", headers=headers), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/users/u1/events", "after", "9" * 25),
        ("/v1/workflows", "limit", "9" * 5000),
        ("/v1/hitl/approvals", "offset", "9" * 5000),
        ("/v1/batch-jobs/messages", "limit", "9" * 5000),
    ],
)
def test_an_integer_query_past_its_range_is_422_naming_it(client, headers, path, name, value):
    refused(client.get(path, params={name: value}, headers=headers), 422, "validation_error", name)


def test_a_workflow_version_past_any_there_can_be_is_not_found(client, headers):
    workflow_id = client.post("/v1/workflows", json=_workflow(), headers=headers).json()["id"]
    assert client.get(f"/v1/workflows/{workflow_id}?version=1", headers=headers).status_code == 200
    for version in ["0", "9" * 5000, "²"]:
        refused(client.get(f"/v1/workflows/{workflow_id}?version={version}", headers=headers), 404, "not_found")


def test_a_stream_resumes_after_a_seq_the_store_can_hold_only(client, headers):
    refused(client.get("/v1/users/u1/events", headers={**headers, "Last-Event-ID": "9" * 25}), 422, "validation_error")


# -- headers, paths and queries -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sha256=é".encode(), b"sha256=\xff", b"sha256=a\x00b"])
def test_a_header_value_that_is_not_printable_ascii_is_422_naming_it(client, settings, value):
    body = b'{"zen": "ping"}'
    headers: dict[str, Any] = {**_signed(settings, body, event="ping"), "X-Hub-Signature-256": value}
    refused(
        client.post("/webhooks/github", content=body, headers=headers), 422, "validation_error", "x-hub-signature-256"
    )


def test_a_nul_in_the_path_or_a_query_parameter_is_422_naming_it(client, headers):
    refused(client.get("/v1/workflows/a%00b", headers=headers), 422, "validation_error", "path")
    refused(
        client.get("/v1/workflow-executions?workflow_id=a%00b", headers=headers), 422, "validation_error", "workflow_id"
    )
    refused(client.get("/v1/hitl/approvals?execution_id=%00", headers=headers), 422, "validation_error", "execution_id")


# -- NUL (and lone surrogates) in every text field of a body ---------------------------------------------


def _workflow(**changes: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(DEMO_WORKFLOW)) | {"name": "nul-test"}
    for key, value in changes.items():
        body[key] = value
    return body


def _workflow_with_step_body(value: str) -> dict[str, Any]:
    body = _workflow()
    body["steps"][0]["body"] = {"note": value}
    return body


@pytest.mark.parametrize(
    ("path", "body", "field", "model"),
    [
        ("/v1/workflows", _workflow(name="a\x00b"), "name", Workflow),
        ("/v1/workflows", _workflow(description="a\x00b"), "description", Workflow),
        ("/v1/workflows", _workflow_with_step_body("a\x00b"), "steps.0.body.note", Workflow),
        ("/v1/workflows", _workflow_with_step_body("a\ud800b"), "steps.0.body.note", Workflow),
        ("/v1/hitl/approvals", {"message": "a\x00", "assignees": ["a"]}, "message", HitlApproval),
        (
            "/v1/hitl/approvals",
            {"message": "m", "assignees": ["a"], "context": {"k": "\x00"}},
            "context.k",
            HitlApproval,
        ),
        (
            "/v1/hitl/approvals",
            {"message": "m", "assignees": ["a"], "context": {"\x00": 1}},
            "context (a key)",
            HitlApproval,
        ),
    ],
)
def test_a_nul_in_any_text_field_is_422_naming_it_and_nothing_is_written(
    client, headers, engine, path, body, field, model
):
    before = count(engine, model)
    refused(client.post(path, content=json.dumps(body).encode(), headers=headers), 422, "validation_error", field)
    assert count(engine, model) == before


@pytest.mark.parametrize(("key", "value", "field"), [("id", "e\x00", "id"), ("data", {"a": ["\x00"]}, "data.a.0")])
def test_a_nul_in_an_event_is_422_naming_the_field(client, settings, tenant, key, value, field):
    event = {
        "id": "e1",
        "type": "shard.updated",
        "tenant_id": tenant,
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": {},
    }
    token = bearer(make_token(settings, tenants=[tenant], roles=["service"]))
    response = client.post("/v1/events", content=json.dumps(event | {key: value}).encode(), headers=token)
    refused(response, 422, "validation_error", field)


def test_a_nul_in_a_decision_links_comment_is_422(client):
    response = client.post(
        "/v1/hitl/approval-links?token=t",
        content=b"comment=a%00b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    refused(response, 422, "validation_error", "comment")


# -- body limits ----------------------------------------------------------------------------------------


def test_a_body_past_the_limit_is_413_and_nothing_is_written(client, headers, engine):
    before = count(engine, HitlApproval)
    context = {"blob": "x" * BODY_LIMIT}
    response = client.post(
        "/v1/hitl/approvals", json={"message": "m", "assignees": ["a"], "context": context}, headers=headers
    )
    refused(response, 413, "payload_too_large")
    assert count(engine, HitlApproval) == before


def test_a_streamed_body_without_a_length_is_cut_at_the_limit(client, headers):
    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        for _ in range(BODY_LIMIT // 1024 + 1):
            yield b" " * 1024

    response = client.post("/v1/hitl/approvals", content=chunks(), headers=headers)
    refused(response, 413, "payload_too_large")


def test_a_webhook_past_its_limit_is_413_before_its_signature_is_checked(client, settings):
    within = b'{"zen": "' + b"x" * BODY_LIMIT + b'"}'  # past the API's limit, within the webhooks' own
    response = client.post("/webhooks/github", content=within, headers=_signed(settings, within, event="ping"))
    assert response.status_code == 200 and response.json()["status"] == "pong"
    body = b'{"zen": "' + b"x" * WEBHOOK_LIMIT + b'"}'
    refused(
        client.post("/webhooks/github", content=body, headers=_signed(settings, body, event="ping")),
        413,
        "payload_too_large",
    )
    unsigned = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-2"}
    refused(client.post("/webhooks/github", content=body, headers=unsigned), 413, "payload_too_large")


def test_the_limit_defaults_are_githubs_for_webhooks_and_a_mebibyte_otherwise():
    defaults = Settings(environment="test")
    assert (defaults.webhook_body_max_bytes, defaults.request_body_max_bytes) == (25 * 1024 * 1024, 1024 * 1024)


def test_a_declared_length_past_the_limit_is_413_without_reading_the_body(settings, engine):
    app = create_app(settings, engine)
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/hitl/approvals",
        "raw_path": b"/v1/hitl/approvals",
        "query_string": b"",
        "headers": [(b"content-length", str(BODY_LIMIT + 1).encode()), (b"content-type", b"application/json")],
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "root_path": "",
    }
    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    assert messages[0]["status"] == 413


# -- the phase endpoint: matches per POST, amounts ----------------------------------------------------------


def _match(n: int) -> dict[str, Any]:
    return {"claim_id": f"c{n}", "confidence": "0.9", "amount": "1.00", "currency": "USD"}


def test_a_phase_four_post_with_more_matches_than_the_limit_is_422_and_nothing_is_queued(client, headers, engine):
    before = count(engine, TriggerQueue)
    body = {"user_id": "u", "sync_id": "s", "matches": [_match(n) for n in range(MAX_MATCHES + 1)]}
    refused(client.post("/api/v1/workflow/phase/4", json=body, headers=headers), 422, "validation_error", "matches")
    assert count(engine, TriggerQueue) == before
    body["matches"] = body["matches"][:MAX_MATCHES]
    assert client.post("/api/v1/workflow/phase/4", json=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    ("phase", "finer", "exact", "currency"),
    [
        (7, "1.23456", "1.230", "USD"),
        (7, 1.23456, 1.23, "USD"),
        (7, "2.5", "500", "JPY"),
        (7, "1.2345", "1.234", "KWD"),
        (5, "0.001", "0.01", "EUR"),
    ],
)
def test_an_amount_finer_than_its_currencys_minor_unit_is_422(client, headers, phase, finer, exact, currency):
    body = {"user_id": "u", "sync_id": "s", "claim_id": "c", "payout_id": "p", "currency": currency}
    response = client.post(f"/api/v1/workflow/phase/{phase}", json=body | {"amount": finer}, headers=headers)
    refused(response, 422, "validation_error", "amount")
    response = client.post(f"/api/v1/workflow/phase/{phase}", json=body | {"amount": exact}, headers=headers)
    assert response.status_code == 202, response.text


def test_a_match_amount_finer_than_its_currencys_minor_unit_is_422(client, headers):
    body = {"user_id": "u", "sync_id": "s", "matches": [_match(0) | {"amount": "12.345"}]}
    refused(
        client.post("/api/v1/workflow/phase/4", json=body, headers=headers), 422, "validation_error", "matches.0.amount"
    )


@pytest.fixture
def client(settings, engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as c:
        yield c
