from __future__ import annotations

import pytest
from pydantic import ValidationError

from domain.settings import Settings


def test_database_url_defaults_to_sqlite_under_dagster_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert Settings().database_url == f"sqlite:///{tmp_path / 'wrk.db'}"


def test_production_refuses_the_development_secrets(monkeypatch):
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValidationError, match="JWT_SECRET, GITHUB_WEBHOOK_SECRET"):
        Settings(environment="production")


def test_production_starts_with_its_own_secrets(monkeypatch):
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "a-real-secret-of-enough-length-0123456789")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "another-real-secret")
    assert Settings().environment == "production"
