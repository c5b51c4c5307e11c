"""The API closes what it opened when it shuts down: its outbound HTTP clients and its own engine."""

from starlette.testclient import TestClient

from api.app import create_app
from domain.core.settings import Settings


def test_shutdown_closes_the_http_clients_and_an_engine_the_app_made(tmp_path):
    settings = Settings(environment="test", database_url=f"sqlite:///{tmp_path / 'wrk.db'}")
    app = create_app(settings)
    disposed = []
    app.state.engine.dispose = lambda *a, **k: disposed.append(True)
    with TestClient(app) as client:
        assert client.get("/health").status_code < 500
        assert not app.state.wrk.http.is_closed
    assert app.state.wrk.http.is_closed and disposed == [True]


def test_an_engine_passed_in_stays_open(engine):
    app = create_app(Settings(environment="test"), engine)
    with TestClient(app):
        pass
    assert app.state.wrk.http.is_closed
    with engine.connect() as conn:  # still usable: it belongs to the caller
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_start_up_freezes_what_it_made_out_of_the_garbage_collector(engine):
    import gc

    app = create_app(Settings(environment="test"), engine)
    with TestClient(app):
        # Once per process: the objects of imports and app building are never walked by a collection.
        assert gc.get_freeze_count() > 0
