"""The auth matrix of ops endpoints: each failure gets the right 401/403/404 problem+json."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from api.app import create_app
from domain.core.settings import Settings
from tests.api.conftest import bearer, make_token

OPS = ["ops_admin"]


def _ids(demo):
    acme, globex = demo["tenants"]
    version = acme["projects"][0]["versions"][0]
    other = globex["projects"][0]["versions"][0]
    return acme["id"], globex["id"], version["id"], other["id"]


def _problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["status"] == status and "Traceback" not in response.text
    return body


def _unsigned(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_member_with_an_ops_role_reads_the_version(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    response = client.get(
        f"/v1/automation-versions/{version}", headers=bearer(make_token(settings, tenants=[tenant], roles=OPS))
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == version and body["tenant_id"] == tenant
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("case", "headers", "detail"),
    [
        ("missing", {}, "missing bearer token"),
        ("malformed scheme", {"Authorization": "Token abc"}, "malformed"),
        ("empty bearer", {"Authorization": "Bearer "}, "malformed"),
        ("garbage", {"Authorization": "Bearer not.a.jwt"}, "invalid token"),
        ("customer key as bearer", {"Authorization": "Bearer wrk_api_123456"}, "customer API keys"),
        ("customer key header", {"X-API-Key": "wrk_api_123456"}, "customer API keys"),
    ],
)
def test_requests_without_a_valid_session_token_are_401(client, demo, case, headers, detail):
    _, _, version, _ = _ids(demo)
    body = _problem(client.get(f"/v1/automation-versions/{version}", headers=headers), 401, "unauthorized")
    assert detail in body["detail"]


def test_expired_token_is_401(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    past = datetime.now(UTC) - timedelta(hours=1)
    token = make_token(settings, tenants=[tenant], roles=OPS, iat=past, exp=past + timedelta(minutes=5))
    body = _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 401, "unauthorized")
    assert body["detail"] == "token expired"


def test_wrong_signature_is_401(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    token = make_token(settings, tenants=[tenant], roles=OPS, key="another-secret-of-sufficient-length-xx")
    body = _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 401, "unauthorized")
    assert body["detail"] == "token signature is invalid"


def test_alg_none_is_401(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    now = int(datetime.now(UTC).timestamp())
    token = _unsigned(
        {
            "sub": "x",
            "iss": settings.jwt_issuer,
            "aud": settings.jwt_audience,
            "iat": now,
            "exp": now + 300,
            "tenants": [tenant],
            "roles": OPS,
        }
    )
    body = _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 401, "unauthorized")
    assert body["detail"] == "token algorithm is not accepted"


@pytest.mark.parametrize(
    ("claim", "value", "detail"),
    [
        ("aud", "someone-else", "token audience is not accepted"),
        ("iss", "https://evil.example", "token issuer is not accepted"),
        ("tenants", "not-a-list", "must be lists"),
    ],
)
def test_wrong_audience_issuer_or_claims_is_401(client, settings, demo, claim, value, detail):
    tenant, _, version, _ = _ids(demo)
    token = make_token(settings, **{"tenants": [tenant], "roles": OPS, claim: value})
    body = _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 401, "unauthorized")
    assert detail in body["detail"]


def test_missing_sub_is_401(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    token = make_token(settings, tenants=[tenant], roles=OPS, sub=None)
    _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 401, "unauthorized")


def test_role_missing_is_403(client, settings, demo):
    tenant, _, version, _ = _ids(demo)
    token = make_token(settings, tenants=[tenant], roles=["client"])
    _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(token)), 403, "forbidden")


def test_tenant_header_not_a_membership_is_403(client, settings, demo):
    tenant, other_tenant, version, _ = _ids(demo)
    token = make_token(settings, tenants=[tenant], roles=OPS)
    response = client.get(f"/v1/automation-versions/{version}", headers={**bearer(token), "X-Tenant-ID": other_tenant})
    _problem(response, 403, "forbidden")


def test_another_tenants_version_is_not_found_revealing_nothing(client, settings, demo):
    tenant, _, _, other_version = _ids(demo)
    token = make_token(settings, tenants=[tenant], roles=OPS)
    body = _problem(client.get(f"/v1/automation-versions/{other_version}", headers=bearer(token)), 404, "not_found")
    assert other_version in body["detail"] and "tenant" not in body["detail"].lower()
    unknown = _problem(client.get("/v1/automation-versions/nope", headers=bearer(token)), 404, "not_found")
    assert set(body) == set(unknown)


def test_rs256_with_a_configured_public_key(engine, demo):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings(environment="test", jwt_algorithms=["RS256"], jwt_public_key=public_pem)
    tenant, _, version, _ = _ids(demo)
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        good = make_token(settings, tenants=[tenant], roles=OPS, key=private, algorithm="RS256")
        assert client.get(f"/v1/automation-versions/{version}", headers=bearer(good)).status_code == 200
        hs = make_token(settings, tenants=[tenant], roles=OPS)  # HS256 is not accepted any more
        body = _problem(client.get(f"/v1/automation-versions/{version}", headers=bearer(hs)), 401, "unauthorized")
        assert body["detail"] == "token algorithm is not accepted"


def test_whoami_reports_the_tokens_identity(client, settings):
    token = make_token(settings, tenants=["t2", "t1"], roles=["ops_build"], sub="u-9")
    assert client.get("/v1/me", headers=bearer(token)).json() == {
        "sub": "u-9",
        "tenants": ["t1", "t2"],
        "roles": ["ops_build"],
        "tenant_roles": {},  # several tenants and no tenant_roles: no role in any of them
    }
    per_tenant = make_token(
        settings, tenants=["t1", "t2"], roles=[], tenant_roles={"t1": ["ops_admin"], "t2": ["client"]}
    )
    assert client.get("/v1/me", headers=bearer(per_tenant)).json()["tenant_roles"] == {
        "t1": ["ops_admin"],
        "t2": ["client"],
    }


def test_malformed_tenant_roles_are_refused(client, settings):
    token = make_token(settings, tenants=["t1"], roles=OPS, tenant_roles={"t1": "ops_admin"})
    body = _problem(client.get("/v1/me", headers=bearer(token)), 401, "unauthorized")
    assert "tenant_roles" in body["detail"]


def test_a_verified_token_is_checked_once_until_its_cache_entry_ends(monkeypatch, settings):
    from api import auth

    authenticator = auth.Authenticator(settings)
    decoded: list[str] = []
    real_decode = auth.jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda token, *a, **k: decoded.append(token) or real_decode(token, *a, **k))
    clock = {"mono": 1000.0}
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock["mono"])
    token = make_token(settings, tenants=["t1"], roles=OPS)
    first = authenticator.verify(token)
    assert authenticator.verify(token) is first and decoded == [token]  # the second: from the cache
    clock["mono"] += authenticator.verified.ttl_s  # the entry's minute is over: checked again
    assert authenticator.verify(token) == first and decoded == [token, token]
    # A refused token is refused every time (nothing cached), with its reason.
    with pytest.raises(auth.Problem):
        authenticator.verify(token[:-4] + "AAAA")
    with pytest.raises(auth.Problem):
        authenticator.verify(token[:-4] + "AAAA")


def test_a_cached_token_never_outlives_its_exp(monkeypatch):
    from api import auth

    principal = auth.principal_from_claims({"sub": "s", "tenants": ["t1"], "roles": OPS, "exp": 1_000_010})
    cache = auth.VerifiedTokens(ttl_s=60, size=2)
    monkeypatch.setattr(auth.time, "time", lambda: 1_000_000.0)  # exp is 10 s away
    clock = {"mono": 50.0}
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock["mono"])
    cache.put("a", principal)
    clock["mono"] += 9.9
    assert cache.get("a") is principal
    clock["mono"] += 0.1  # exp reached, long before the minute
    assert cache.get("a") is None
    monkeypatch.setattr(auth.time, "time", lambda: 1_000_011.0)
    cache.put("b", principal)  # already expired: not kept
    assert cache.get("b") is None


def test_the_token_cache_keeps_the_most_recently_used(monkeypatch):
    from api import auth

    principal = auth.principal_from_claims({"sub": "s", "tenants": ["t1"], "roles": OPS, "exp": 2_000_000_000})
    cache = auth.VerifiedTokens(ttl_s=60, size=2)
    cache.put("a", principal)
    cache.put("b", principal)
    assert cache.get("a") is principal  # "a" used last: "b" goes first
    cache.put("c", principal)
    assert cache.get("b") is None and cache.get("a") is principal and cache.get("c") is principal
