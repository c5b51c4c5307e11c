"""Development JWTs, signed with the configured HS256 secret (`wrk-orch token`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt

from domain.settings import Settings


def mint_dev_token(
    settings: Settings,
    *,
    tenants: list[str],
    roles: list[str],
    sub: str = "dev-user",
    ttl_seconds: int = 3600,
) -> str:
    if settings.environment == "production":
        raise PermissionError("development tokens are not minted in production")
    now = datetime.now(UTC)
    claims = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl_seconds),
        "jti": str(uuid.uuid4()),
        "tenants": tenants,
        "roles": roles,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")
