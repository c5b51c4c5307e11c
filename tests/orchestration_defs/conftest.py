import pytest

from domain.settings import get_settings


@pytest.fixture
def flow_env(monkeypatch, sandbox, database_url, tmp_path):
    """Settings for flows under test: the sandbox, the test store, fast retries."""
    for name, value in {
        "DATABASE_URL": database_url,
        "WRK_API_URL": sandbox.url,
        "GITHUB_API_URL": sandbox.github_url,
        "SMTP_PORT": str(sandbox.smtp_port),
        "RETRY_BASE_DELAY_S": "0.01",
        "RETRY_MAX_DELAY_S": "0.05",
        "HTTP_READ_TIMEOUT_S": "0.5",
        "OPS_EMAIL": "ops@wrk.test",
        "RELEASE_DIR": str(tmp_path / "releases"),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
