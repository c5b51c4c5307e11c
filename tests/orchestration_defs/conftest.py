from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from domain.core.settings import Settings, get_settings


@pytest.fixture
def wf_env(flow_env, monkeypatch, sandbox) -> Iterator[Settings]:
    """The flows' settings, with the six services on the test sandbox (as SANDBOX_PORT does under make run)."""
    monkeypatch.setenv("SANDBOX_PORT", str(urlsplit(sandbox.url).port))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
