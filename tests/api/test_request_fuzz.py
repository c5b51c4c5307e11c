"""Every operation of the API, fuzzed through a real uvicorn on loopback on each backend: no request,
however hostile its path, query, headers or body, gets a 5xx or a dropped connection.

Bodies are valid examples of each operation with some of their values swapped for worst cases (NUL
characters, lone surrogates, integers past 64 bits, numbers past a float, deep nesting, long text), or
raw worst-case bytes; paths and queries take real ids, long digit strings and hostile text; headers take
non-ASCII bytes. Hypothesis is derandomized (the same examples on every run) and bounded per operation.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from api.app import ENDPOINTS, create_app
from api.openapi import Endpoint
from cli.demo import DEMO_WORKFLOW, seed_demo
from domain.core.settings import Settings
from domain.core.store import transaction
from tests.api.conftest import make_token
from tests.servers import ServerThread

EXAMPLES_PER_OPERATION = 25
ALL_ROLES = ["admin", "ops_admin", "ops_build", "ops_release", "service", "approver", "workflow_operator"]

HOSTILE_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "é" * 300,
    "x" * 5000,
    "🙂",
    "",
    " ",
    "9" * 25,
    "-1",
    "P99999999999D",
    "../../etc/passwd",
    "%00",
]
HOSTILE_VALUES: list[Any] = [
    *HOSTILE_TEXT,
    2**63,
    -(2**63) - 1,
    10**30,
    1e308,
    -1e308,
    1e-30,
    -1,
    0,
    None,
    True,
    [],
    {},
    "1.23456",
    {"\x00": 1},
]


class Body(bytes):
    """Bytes whose repr is short enough to read in a failure report."""

    def __repr__(self) -> str:
        return f"Body({bytes(self[:200])!r}{'...' if len(self) > 200 else ''}, {len(self)} bytes)"


HOSTILE_BODIES = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 40 + b"1" + b"}" * 40,
    b"9" * 30,
    b'{"x": 1e400}',
    b'{"x": NaN}',
    b"Infinity",
    b"\xff\xfe\x00",
    b'"\\ud800"',
    b'{"user_id": "\\u0000"}',
    b"",
    b"null",
    b"[" + b"0," * 600_000 + b"0]",  # past the default body limit
]

PHASE_EXAMPLES = [
    {"user_id": "u1", "sync_id": "s1", "seller_id": "seller", "source": {"note": "n"}},
    {
        "user_id": "u1",
        "sync_id": "s1",
        "matches": [
            {"claim_id": "c1", "confidence": 0.9, "amount": "12.34", "currency": "USD", "evidence_ids": ["e1"]},
            {"claim_id": "c2", "confidence": "0.6", "amount": 3, "currency": "jpy"},
        ],
    },
    {"user_id": "u1", "sync_id": "s1", "claim_id": "c1", "amount": "10.00", "currency": "USD"},
    {"user_id": "u1", "sync_id": "s1", "claim_id": "c1", "reason_code": "late"},
    {"user_id": "u1", "sync_id": "s1", "claim_id": "c1", "payout_id": "p1", "amount": "10.03", "currency": "USD"},
]
BODY_EXAMPLES: dict[str, list[Any]] = {
    "trigger_phase": PHASE_EXAMPLES,
    "create_workflow": [DEMO_WORKFLOW],
    "update_workflow": [DEMO_WORKFLOW],
    "start_execution": [{"input": {"account_id": "a1", "n": 1}}],
    "post_event": [
        {
            "id": "ev-1",
            "type": "shard.updated",
            "tenant_id": "TENANT",
            "occurred_at": "2026-01-01T00:00:00Z",
            "data": {"account_id": "a1"},
        }
    ],
    "create_approval": [
        {"message": "ship it?", "assignees": ["ops-1", "role:approver"], "timeout": "PT1H", "context": {"k": "v"}}
    ],
    "decide": [{"decision": "approve", "comment": "ok"}, {"decision": "reject"}],
    "change_status": [{"status": "Live", "deployment_reason": "r", "notes": "n"}, {"status": "Paused"}],
    "rollback_project": [{"reason": "r", "notes": "n"}],
    "github_webhook": [
        {"action": "published", "release": {"tag_name": "v1.2.3", "name": "r"}},
        {"workflow_run": {"id": 1, "status": "completed", "conclusion": "success"}},
        {"client_payload": {"run_id": 7, "status": "completed"}},
        {"zen": "ping"},
    ],
}
QUERY_VALUES = ["1", "0", "50", "json", "pending", "true", "queued,running", "9" * 25, "9" * 5000, "²", "١٢"]


def _example(example: Any, tenant: str) -> Any:
    """A copy of `example`, naming the fuzzed tenant where it names one."""
    body = copy.deepcopy(example)
    if isinstance(body, dict) and body.get("tenant_id") == "TENANT":
        body["tenant_id"] = tenant
    return body


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _leaves(child, (*path, index))


@st.composite
def mutated(draw: st.DrawFn, examples: list[Any], tenant: str) -> Body:
    """A valid example with one or two of its values (or the whole) swapped for worst cases, and maybe a
    hostile key added: the rest stays valid, so each swap reaches the validation behind it."""
    body = _example(draw(st.sampled_from(examples)), tenant)
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(list(_leaves(body))))
        value = draw(st.sampled_from(HOSTILE_VALUES))
        if not path:
            return Body(json.dumps(value).encode())
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
    if isinstance(body, dict) and draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(HOSTILE_TEXT))] = draw(st.sampled_from(HOSTILE_VALUES))
    return Body(json.dumps(body).encode())


class Caller:
    """Sends one request to an operation, valid in every part not given, and checks the answer: below 500,
    and whole (the connection is not dropped midway)."""

    def __init__(self, client: httpx.Client, settings: Settings, tenant: str, ids: dict[str, list[str]]) -> None:
        self.client, self.settings, self.tenant, self.ids = client, settings, tenant, ids
        token = make_token(
            settings, tenants=[tenant], roles=ALL_ROLES, sub="ops-1", exp=datetime.now(UTC) + timedelta(days=1)
        )
        self.valid_headers = {"authorization": f"Bearer {token}".encode(), "x-tenant-id": tenant.encode()}

    def examples(self, endpoint: Endpoint) -> list[Any]:
        return BODY_EXAMPLES.get(endpoint.handler.__name__, [{}])

    def valid_body(self, endpoint: Endpoint) -> bytes:
        return json.dumps(_example(self.examples(endpoint)[0], self.tenant)).encode()

    def __call__(
        self,
        endpoint: Endpoint,
        path: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, bytes | None] | None = None,
        body: bytes | None = None,
    ) -> None:
        values = {name: (self.ids.get(name) or ["u1"])[0] for name in path_names(endpoint)} | (path or {})
        url = _path(endpoint, values)
        if query:
            url += "?" + urlencode({name: value.encode("utf-8", "surrogatepass") for name, value in query.items()})
        if body is None:
            body = self.valid_body(endpoint) if endpoint.method in ("POST", "PUT", "PATCH") else b""
        sent = {"content-type": b"application/json", **self.valid_headers}
        if endpoint.path == "/webhooks/github":
            secret = self.settings.github_webhook_secret.get_secret_value().encode()
            signature = hmac.new(secret, body, hashlib.sha256).hexdigest()
            sent |= {
                "x-github-delivery": uuid.uuid4().hex.encode(),
                "x-github-event": b"release",
                "x-hub-signature-256": f"sha256={signature}".encode(),
            }
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        request = self.client.build_request(endpoint.method, url, headers=sent, content=body or None)
        response = self.client.send(request, stream=True)
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()  # the whole answer arrives: the connection was not dropped
            assert response.status_code < 500, (
                f"{endpoint.method} {url} headers={sorted(headers or {})} body={Body(body)!r} -> "
                f"{response.status_code}: {response.content[:300]!r}"
            )
        finally:
            response.close()


def path_names(endpoint: Endpoint) -> list[str]:
    return [part[1:-1].split(":")[0] for part in endpoint.path.split("/") if part.startswith("{")]


def _path(endpoint: Endpoint, values: dict[str, str]) -> str:
    parts = []
    for part in endpoint.path.split("/"):
        if part.startswith("{"):
            # A lone surrogate goes as the bytes it would be (not UTF-8): the server decodes what it can.
            value = values[part[1:-1].split(":")[0]].encode("utf-8", "surrogatepass")
            parts.append(quote(value, safe=""))
        else:
            parts.append(part)
    return "/".join(parts)


# NUL, CR and LF cannot cross HTTP/1.1 (the client refuses them): tests/api/test_request_rules.py sends them.
HOSTILE_HEADERS = [b"\xc3\xa9t\xc3\xa9", b"\xff", b"x" * 5000, b"9" * 25, b"", None]
PATH_VALUES = [*HOSTILE_TEXT, "0", "9" * 19, "9" * 26, "9" * 5000, "²", "١٢"]


@pytest.fixture(scope="module")
def call(shared_engine, sandbox_server) -> Iterator[Caller]:
    settings = Settings(
        environment="test",
        wrk_api_url=sandbox_server.url,
        github_api_url=sandbox_server.github_url,
        deploy_deadline_s=60,
    )
    with transaction(shared_engine) as session:
        demo = seed_demo(session)
    tenant = demo["tenants"][0]
    ids = {
        "version_id": [v["id"] for p in tenant["projects"] for v in p["versions"]],
        "project_id": [p["id"] for p in tenant["projects"]],
        "phaseNumber": [str(n) for n in range(1, 8)],
        "trigger_id": ["1", "2"],
    }
    server = ServerThread(create_app(settings, shared_engine)).start()
    with httpx.Client(base_url=server.url, timeout=120) as client:
        caller = Caller(client, settings, tenant["id"], ids)
        ids |= _made_rows(client, caller.valid_headers)
        yield caller
    server.stop()


def _made_rows(client: httpx.Client, headers: dict[str, bytes]) -> dict[str, list[str]]:
    """A workflow, an execution of it and an approval, so their routes' bodies get past the lookup."""
    workflow = client.post("/v1/workflows", json=DEMO_WORKFLOW | {"name": "fuzzed"}, headers=headers)
    workflow_id = workflow.raise_for_status().json()["id"]
    execution = client.post(f"/v1/workflows/{workflow_id}/executions", json={"input": {}}, headers=headers)
    approval = client.post("/hitl/approvals", json=BODY_EXAMPLES["create_approval"][0], headers=headers)
    return {
        "workflow_id": [workflow_id],
        "execution_id": [execution.raise_for_status().json()["execution_id"]],
        "approval_id": [approval.raise_for_status().json()["id"]],
    }


OPERATIONS = pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e.method} {e.path}")


@OPERATIONS
def test_every_worst_case_of_every_part_is_answered_below_500(call: Caller, endpoint: Endpoint) -> None:
    """Each worst case once, in each part of the request, the other parts valid."""
    for name in path_names(endpoint):
        for value in PATH_VALUES:
            call(endpoint, path={name: value})
    for name in (param.name for param in endpoint.query):
        for value in [*QUERY_VALUES, *HOSTILE_TEXT]:
            call(endpoint, query={name: value})
    for name in ["authorization", "x-tenant-id", *(h.name.lower() for h in endpoint.headers)]:
        for header in HOSTILE_HEADERS:
            call(endpoint, headers={name: header})
    if endpoint.method in ("POST", "PUT", "PATCH"):
        for raw in HOSTILE_BODIES:
            call(endpoint, body=raw)
        for value in HOSTILE_VALUES:  # each worst case as the whole body, and as every top-level value
            call(endpoint, body=json.dumps(value).encode())
            for example in call.examples(endpoint):
                if isinstance(example, dict):
                    for key in example:
                        body = _example(example, call.tenant) | {key: value}
                        call(endpoint, body=json.dumps(body).encode())


@OPERATIONS
def test_no_request_gets_a_server_error(call: Caller, endpoint: Endpoint) -> None:
    """Worst cases combined, deep in the bodies (Hypothesis picks the values and where they go)."""
    names = path_names(endpoint)
    path_values = {name: st.sampled_from([*(call.ids.get(name) or ["u1"]), *PATH_VALUES]) for name in names}
    query_values = st.one_of(st.sampled_from([*QUERY_VALUES, *HOSTILE_TEXT]), st.text(max_size=10))
    has_body = endpoint.method in ("POST", "PUT", "PATCH")

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        path=st.fixed_dictionaries({}, optional=path_values),
        query=st.fixed_dictionaries({}, optional=dict.fromkeys((param.name for param in endpoint.query), query_values)),
        headers=st.fixed_dictionaries(
            {}, optional=dict.fromkeys(["authorization", "x-tenant-id"], st.sampled_from(HOSTILE_HEADERS))
        ),
        body=mutated(call.examples(endpoint), call.tenant) if has_body else st.none(),
    )
    def fuzz(path: dict[str, str], query: dict[str, str], headers: dict[str, bytes | None], body: Body | None) -> None:
        call(endpoint, path=path, query=query, headers=headers, body=body)

    fuzz()
