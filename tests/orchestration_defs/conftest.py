from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from domain.core.settings import Settings, get_settings
from domain.core.store import transaction
from tests.domain import factories


@pytest.fixture
def wf_env(flow_env, monkeypatch, sandbox) -> Iterator[Settings]:
    """The flows' settings, with the six services on the test sandbox (as SANDBOX_PORT does under make run)."""
    monkeypatch.setenv("SANDBOX_PORT", str(urlsplit(sandbox.url).port))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def phase_env(flow_env, sandbox, tmp_path, monkeypatch) -> Iterator[Settings]:
    """The phase worker's settings in process: the sandbox's backends, a worker that ends once nothing is due."""
    for name, value in {
        "INTEGRATIONS_API_URL": sandbox.url + "/integrations",
        "PAYMENTS_API_URL": sandbox.url + "/payments",
        "PROOF_PACKET_DIR": str(tmp_path / "packets"),
        "PHASE_ROW_WORKERS": "4",
        "PHASE_WORKER_IDLE_S": "0",  # a worker in process ends once nothing is due
        "PHASE_WORKERS": "1",  # one run a tick (the sensor starts every missing worker at once)
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    sandbox.http.post("/_sandbox/integrations/config", json={"callbacks_enabled": False}).raise_for_status()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def tenant(engine) -> str:
    """A tenant of the store, for the phase tests' triggers."""
    with transaction(engine) as session:
        return factories.tenant(session).id
