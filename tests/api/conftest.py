from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from cli.demo import seed_demo
from domain.core.settings import Settings
from domain.core.store import transaction


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test")


@pytest.fixture
def demo(engine: Engine) -> dict[str, Any]:
    with transaction(engine) as session:
        return seed_demo(session)


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as c:
        yield c


def make_token(
    settings: Settings,
    *,
    tenants: list[str],
    roles: list[str],
    sub: str = "ops-1",
    key: Any = None,
    algorithm: str = "HS256",
    **overrides: Any,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "tenants": tenants,
        "roles": roles,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key if key is not None else settings.jwt_secret.get_secret_value(), algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
