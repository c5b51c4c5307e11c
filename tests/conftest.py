"""Fixtures: every store test runs on SQLite and on the throwaway PostgreSQL `make test` starts.

Databases are made per test from a migrated template (a copied file on SQLite, `CREATE DATABASE ...
TEMPLATE` on PostgreSQL), so tests are isolated and safe to run in parallel.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine, text

from domain.core import migrate, store
from domain.core.settings import get_settings
from domain.core.store import make_engine
from tests.servers import Sandbox

# anyio imports its parts lazily on first use, which in these tests is often inside a server thread
# (FileResponse's anyio.open_file), while the main thread imports too; pytest's import hook compiles
# anyio's modules, and CPython 3.11's compiler is not safe from two threads at once ("SystemError: AST
# constructor recursion depth mismatch", seen once in CI). Import them all here, in the main thread.
for _name in dir(anyio):
    getattr(anyio, _name)

BACKENDS = ["sqlite", "postgresql"]
PG_URL_ENV = "TEST_POSTGRES_URL"


def _pg_admin_url() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        message = f"{PG_URL_ENV} is not set: run the suite with `make test`, which starts PostgreSQL"
        if os.environ.get("WRK_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return url


class DatabaseFactory:
    """Makes empty or migrated databases of one backend, and drops them at the end."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self._template: str | None = None
        self._engines: list[Engine] = []
        self._pg_databases: list[str] = []
        self._admin: Engine | None = None
        if backend == "postgresql":
            self._admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")

    def _url_for(self, name: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.workdir / (name + '.db')}"
        assert self._admin is not None
        return self._admin.url.set(database=name).render_as_string(hide_password=False)

    def _create(self, template: str | None = None) -> str:
        name = f"wrk_{uuid.uuid4().hex[:16]}"
        if self.backend == "sqlite":
            if template:
                shutil.copyfile(self.workdir / (template + ".db"), self.workdir / (name + ".db"))
        else:
            assert self._admin is not None
            with self._admin.connect() as conn:
                suffix = f" TEMPLATE {template}" if template else ""
                conn.execute(text(f"CREATE DATABASE {name}{suffix}"))
            self._pg_databases.append(name)
        return name

    def _engine(self, name: str) -> Engine:
        engine = make_engine(self._url_for(name))
        self._engines.append(engine)
        return engine

    def url(self, engine: Engine) -> str:
        return engine.url.render_as_string(hide_password=False)

    def empty(self) -> Engine:
        return self._engine(self._create())

    def migrated(self) -> Engine:
        if self._template is None:
            name = self._create()
            engine = make_engine(self._url_for(name))
            migrate.upgrade(engine)
            engine.dispose()  # closing SQLite's last connection checkpoints the WAL into the file
            self._template = name
        return self._engine(self._create(self._template))

    def release(self, engine: Engine) -> None:
        """Close a test's store and, on PostgreSQL, drop its database (WITH FORCE: a server the test
        started may still hold a connection). Per-test pools left open ran PostgreSQL out of clients."""
        engine.dispose()
        self._engines.remove(engine)
        if self._admin is not None and engine.url.database in self._pg_databases:
            with self._admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {engine.url.database} WITH (FORCE)"))
            self._pg_databases.remove(engine.url.database)

    def close(self) -> None:
        for engine in self._engines:
            engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as conn:
                for name in [*self._pg_databases]:
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            self._admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def databases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(request.param, tmp_path_factory.mktemp(f"db-{request.param}"))
    yield factory
    factory.close()


@pytest.fixture
def engine(databases: DatabaseFactory) -> Iterator[Engine]:
    """A migrated store of its own, on each backend."""
    engine = databases.migrated()
    yield engine
    databases.release(engine)


@pytest.fixture
def backend(databases: DatabaseFactory) -> str:
    return databases.backend


@pytest.fixture
def database_url(databases: DatabaseFactory, engine: Engine) -> str:
    return databases.url(engine)


@pytest.fixture(scope="module")
def shared_engine(databases: DatabaseFactory) -> Iterator[Engine]:
    """A migrated store shared by one module's tests, each of which makes its own rows."""
    engine = databases.migrated()
    yield engine
    databases.release(engine)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    from resources.sandbox.app import create_app
    from tests.servers import ServerThread, free_port

    smtp_port = free_port()
    server = ServerThread(create_app(smtp_port=smtp_port)).start()
    yield Sandbox(server.url, smtp_port)
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    """The sandbox, reset for this test (state, faults, call log, sinks)."""
    sandbox_server.reset()
    return sandbox_server


class Sleeps(list):
    """A retry policy's `sleep` that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def flow_env(monkeypatch, sandbox, database_url, tmp_path):
    """Settings for flows under test: the sandbox, the test store, fast retries. The read timeout stays
    the default (30 s): a sandbox slowed by a busy machine must not turn one call into two in tests that
    count calls; a test of timeouts sets a short one itself."""
    for name, value in {
        "DATABASE_URL": database_url,
        "WRK_API_URL": sandbox.url,
        "GITHUB_API_URL": sandbox.github_url,
        "SMTP_PORT": str(sandbox.smtp_port),
        "RETRY_BASE_DELAY_S": "0.01",
        "RETRY_MAX_DELAY_S": "0.05",
        "OPS_EMAIL": "ops@wrk.test",
        "RELEASE_DIR": str(tmp_path / "releases"),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


# Screenshots of the browser tests (tests/browser/) go under <this>/browser/; var/ is git-ignored.
ARTIFACTS_ENV = "WRK_TEST_ARTIFACTS"


def artifacts_dir() -> Path:
    """Where tests save artifacts a person looks at after the run (WRK_TEST_ARTIFACTS overrides)."""
    return Path(os.environ.get(ARTIFACTS_ENV) or Path(__file__).resolve().parents[1] / "var" / "test-artifacts")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the browser tests' screenshots are, when any of them ran."""
    reports = [r for found in terminalreporter.stats.values() for r in found]
    if any(getattr(r, "when", None) == "call" and r.nodeid.startswith("tests/browser/") for r in reports):
        terminalreporter.write_line(f"browser test screenshots: {artifacts_dir() / 'browser'}")


RABBITMQ_URL_ENV = "TEST_RABBITMQ_URL"
# `make test` sets this: there, a test that needs the broker fails instead of skipping when it is missing.
REQUIRE_SERVICES_ENV = "WRK_TEST_REQUIRE_SERVICES"


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Any]:
    """A throwaway Dagster instance (its own directory under the test's tmp_path)."""
    import dagster as dg  # here: the API's tests do not need Dagster

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The throwaway RabbitMQ `make test` starts (scripts/with-rabbitmq); skipped under plain pytest."""
    url = os.environ.get(RABBITMQ_URL_ENV)
    if not url:
        message = f"{RABBITMQ_URL_ENV} is not set: run the suite with `make test`, which starts RabbitMQ"
        if os.environ.get(REQUIRE_SERVICES_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def rabbitmq_ctl(rabbitmq_url: str) -> str:
    """A script running rabbitmqctl against the test broker (`stop_app`, `start_app`)."""
    return os.environ["TEST_RABBITMQ_CTL"]


@pytest.fixture(autouse=True)
def _dispose_store_engines():
    """Engines made by `engine_for` (resources, the API) are closed after each test: the test's database
    is dropped, and pools left open would exhaust the shared PostgreSQL's connections."""
    yield
    store.dispose_engines()
