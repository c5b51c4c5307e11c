"""The stack a browser drives, each part its own process on free loopback ports: the API under uvicorn,
the sandbox, and a Dagster code server with a daemon (its queue sensors launch the workflow runs an
approval's decision resumes); Debian's Chromium through Playwright's sync API; screenshots saved as test
artifacts under WRK_TEST_ARTIFACTS (default var/test-artifacts)/browser/, which the run prints at its end.

Skipped when Chromium is absent, unless WRK_TEST_REQUIRE_SERVICES is set (`make test`): then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import Engine

from domain.core.settings import Settings
from domain.core.store import transaction
from domain.core.tokens import mint_dev_token
from tests.conftest import REQUIRE_SERVICES_ENV, artifacts_dir
from tests.domain import factories
from tests.domain.test_approvals import member
from tests.servers import ROOT, Processes, dagster_home, free_port, sandbox_env

PHONE = {"width": 360, "height": 740}
# Playwright's actions and assertions wait for their condition up to this (its defaults, 30 s and 5 s,
# are speed bounds a busy machine breaks: load 25 on 2 cores was seen while these ran).
WAIT_MS = 300_000
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium binary, as scripts/ensure-chromium finds it (WRK_CHROMIUM overrides); this
    only looks: `make test` installs it first."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "ensure-chromium"), "--no-install", "--verbose"], capture_output=True, text=True
    )
    if found.returncode == 0:
        return found.stdout.strip()
    message = found.stderr.strip() or "no Chromium: run scripts/ensure-chromium (make test does) or set WRK_CHROMIUM"
    if found.returncode == 1 and not os.environ.get(REQUIRE_SERVICES_ENV):
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """One Chromium per test module, headless."""
    # Chromium refuses to start as root with its sandbox on (containers and CI run tests as root); the
    # pages are this project's own, on loopback, so the sandbox is dropped there and only there.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=args)
        yield launched
        launched.close()


@dataclass
class Person:
    """A member of a tenant, with a dev token for the API."""

    id: str
    name: str
    tenant_id: str
    roles: list[str]
    token: str


@dataclass
class Stack:
    api_url: str
    sandbox_url: str
    engine: Engine
    backend: str
    settings: Settings
    log: Path
    people: dict[str, Person] = field(default_factory=dict)

    def api(self, person: Person) -> httpx.Client:
        """The API as `person`, acting in their tenant."""
        return self.api_as(person.tenant_id, person.token)

    def api_as(self, tenant_id: str, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant_id}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=60)

    def service(self, tenant_id: str, roles: list[str]) -> httpx.Client:
        """The API as another service (not a person of the tenant) holding `roles` there."""
        token = mint_dev_token(self.settings, tenants=[tenant_id], roles=roles, sub="billing-service")
        return self.api_as(tenant_id, token)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def person(stack_settings: Settings, session: Any, tenant_id: str, name: str, roles: list[str]) -> Person:
    user = member(session, tenant_id, roles, name)
    token = mint_dev_token(stack_settings, tenants=[tenant_id], roles=roles, sub=user.id, ttl_seconds=6 * 3600)
    return Person(user.id, name, tenant_id, roles, token)


@pytest.fixture(scope="module")
def stack(
    chromium: str, shared_engine: Engine, databases: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The API, the sandbox and a Dagster daemon on one store, with a tenant whose approvers are alice
    and bob, and a foreign tenant with mallory. Not started without a browser to drive it (`chromium`)."""
    home = tmp_path_factory.mktemp("browser-stack")
    dagster_home(home / "dagster")
    log_path = home / "stack.log"
    env = {
        "DAGSTER_HOME": str(home / "dagster"),
        "DATABASE_URL": databases.url(shared_engine),
        "SMTP_PORT": str(free_port()),
        "SENSOR_INTERVAL_SECONDS": "1",
        "RETRY_BASE_DELAY_S": "0.05",
        "RETRY_MAX_DELAY_S": "0.2",
    }
    settings = Settings(environment="test")
    with log_path.open("w") as log:
        processes = Processes(env, log)
        try:
            sandbox_url = processes.uvicorn("resources.sandbox.app:create_app")
            processes.env |= sandbox_env(sandbox_url)
            api_url = processes.uvicorn("api.app:create_app")
            processes.env["HITL_LINK_BASE_URL"] = api_url  # the links in the approvals' e-mails
            workspace = processes.dagster_code_server(home / "dagster")
            processes.dagster_daemon(workspace)
            stack = Stack(api_url, sandbox_url, shared_engine, databases.backend, settings, log_path)
            with transaction(shared_engine) as session:
                tenant = factories.tenant(session, "Acme Browser").id
                foreign = factories.tenant(session, "Foreign Browser").id
                stack.people = {
                    "alice": person(settings, session, tenant, "alice", ["approver"]),
                    "bob": person(settings, session, tenant, "bob", ["approver"]),
                    "mallory": person(settings, session, foreign, "mallory", ["approver"]),
                }
            shutil.rmtree(artifacts_dir() / "browser" / databases.backend, ignore_errors=True)
            yield stack
        finally:
            processes.stop()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """`new_context(**options)`: a fresh browser profile (cookies of its own; Playwright's context
    options, e.g. a viewport), closed after the test. One per person when a test has several."""
    opened: list[BrowserContext] = []

    def new(**options: Any) -> BrowserContext:
        context = browser.new_context(**options)
        # Waits end on conditions; the bound only stops a broken page from hanging the suite.
        context.set_default_timeout(WAIT_MS)
        opened.append(context)
        return context

    yield new
    for context in opened:
        context.close()


@pytest.fixture
def context(new_context: Callable[..., BrowserContext]) -> BrowserContext:
    return new_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, stack: Stack) -> Callable[[Page, str], Path]:
    """`screenshot(page, "step")` saves the whole page as <artifacts>/browser/<backend>/<test>/<step>.png."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.originalname)
    folder = artifacts_dir() / "browser" / stack.backend / test

    def save(page: Page, step: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
