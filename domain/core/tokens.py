"""Development JWTs, signed with the configured HS256 secret (`wrk-orch token`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import jwt

from domain.core.settings import Settings


class InvalidTokenRequest(ValueError):
    """A token that would be useless or wrong (no tenant, a lifetime that is not positive)."""


def mint_dev_token(
    settings: Settings,
    *,
    tenants: Sequence[str],
    roles: Sequence[str],
    tenant_roles: Mapping[str, Sequence[str]] | None = None,
    sub: str = "dev-user",
    ttl_seconds: int = 3600,
) -> str:
    """A token holding `roles` platform-wide and in each of `tenants`, plus `tenant_roles` (roles in
    one tenant only). Roles are per tenant (see api.auth): the `tenant_roles` claim says which."""
    if settings.environment == "production":
        raise PermissionError("development tokens are not minted in production")
    per_tenant: dict[str, list[str]] = {t: list(roles) for t in tenants if t}
    for tenant, extra in (tenant_roles or {}).items():
        if tenant:
            per_tenant[tenant] = sorted({*per_tenant.get(tenant, []), *extra})
    if not per_tenant:
        raise InvalidTokenRequest("a token needs at least one tenant")
    if ttl_seconds <= 0:
        raise InvalidTokenRequest(f"the lifetime must be positive, not {ttl_seconds} s")
    now = datetime.now(UTC)
    claims = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": str(uuid.uuid4()),
        "tenants": list(per_tenant),
        "roles": list(roles),
        "tenant_roles": per_tenant,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
