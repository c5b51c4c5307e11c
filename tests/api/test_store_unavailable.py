"""A store outage answers 503 `store_unavailable` with Retry-After, so callers (and GitHub) retry."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

from api.app import create_app
from domain.core.store import make_engine, transaction
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.servers import free_port


def _down_store(backend: str, tmp_path):
    if backend == "postgresql":
        # Nothing listens on this port: as if PostgreSQL were stopped.
        return make_engine(f"postgresql://wrk:wrk@127.0.0.1:{free_port()}/wrk", connect_args={"connect_timeout": 2})
    # A file SQLite cannot open (its folder does not exist): the embedded store's outage.
    return create_engine(f"sqlite:///{tmp_path / 'missing-folder' / 'wrk.db'}")


@pytest.mark.parametrize("backend_down", ["sqlite", "postgresql"])
def test_writes_and_reads_during_a_store_outage_are_503_with_retry_after(backend_down, settings, tmp_path):
    app = create_app(settings, _down_store(backend_down, tmp_path))
    token = make_token(settings, tenants=["t1"], roles=["ops_admin"])
    with TestClient(app, raise_server_exceptions=False) as client:
        service = bearer(make_token(settings, tenants=["t1"], roles=["service"]))
        for response in (
            client.post("/v1/automation-versions/v-1/build", headers=bearer(token)),
            client.get("/v1/automation-versions/v-1", headers=bearer(token)),
            client.post("/api/v1/workflow/phase/1", json={"user_id": "u1"}, headers=service),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "store_unavailable"
            assert int(response.headers["retry-after"]) > 0


def test_a_connection_lost_mid_service_is_503_then_the_store_recovers(engine, backend, settings, demo):
    if backend != "postgresql":
        pytest.skip("a server-side disconnect needs a server")
    token = make_token(settings, tenants=[demo["tenants"][0]["id"]], roles=["ops_admin"])
    version = next(v["id"] for p in demo["tenants"][0]["projects"] for v in p["versions"] if v["status"] == "Draft")
    app = create_app(settings, engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get(f"/v1/automation-versions/{version}", headers=bearer(token)).status_code == 200
        # The server drops every connection of this database, as a restart would (from another pool, so
        # the app's idle pooled connection is the one killed).
        admin = create_engine(engine.url, poolclass=NullPool)
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        admin.dispose()
        assert killed >= 1
        # The app's first use of its dead connection is a 503; SQLAlchemy drops the pool, the retry works.
        response = client.post(f"/v1/automation-versions/{version}/build", headers=bearer(token))
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "store_unavailable" and "retry-after" in response.headers
        response = client.post(f"/v1/automation-versions/{version}/build", headers=bearer(token))
        assert response.status_code == 202, response.text


def test_a_phase_post_on_a_lost_connection_is_503_then_the_next_is_queued(engine, backend, settings):
    # The phase endpoint queues with plain SQL on the driver's connection (domain/queue/queue.py): its errors are
    # the driver's own, unwrapped by SQLAlchemy, and must still answer 503 and leave the pool healthy.
    if backend != "postgresql":
        pytest.skip("a server-side disconnect needs a server")
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    service = bearer(make_token(settings, tenants=[tenant], roles=["service"]))
    app = create_app(settings, engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        first = client.post("/api/v1/workflow/phase/1", json={"user_id": "u1", "sync_id": "s1"}, headers=service)
        assert first.status_code == 202, first.text
        admin = create_engine(engine.url, poolclass=NullPool)
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()
        lost = client.post("/api/v1/workflow/phase/1", json={"user_id": "u2", "sync_id": "s2"}, headers=service)
        assert lost.status_code == 503, lost.text
        assert lost.json()["code"] == "store_unavailable" and "retry-after" in lost.headers
        again = client.post("/api/v1/workflow/phase/1", json={"user_id": "u2", "sync_id": "s2"}, headers=service)
        assert again.status_code == 202, again.text
