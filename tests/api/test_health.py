from __future__ import annotations

from starlette.testclient import TestClient

from api.app import create_app
from domain.core.settings import Settings
from domain.core.store import make_engine


def test_health_answers_while_the_process_lives(engine):
    with TestClient(create_app(Settings(), engine)) as client:
        assert client.get("/health").json() == {"status": "ok"}


def test_ready_when_the_store_is_reachable_and_at_head(engine):
    with TestClient(create_app(Settings(), engine)) as client:
        response = client.get("/ready")
    assert response.status_code == 200 and response.json()["ready"] is True


def test_not_ready_when_migrations_are_behind(databases):
    with TestClient(create_app(Settings(), databases.empty())) as client:
        response = client.get("/ready")
    assert response.status_code == 503 and response.json()["ready"] is False


def test_not_ready_when_the_store_is_unreachable():
    unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    with TestClient(create_app(Settings(), unreachable)) as client:
        response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "database": "unreachable", "error": "OperationalError"}
