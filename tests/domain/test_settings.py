from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from domain.core.settings import (
    ConfigurationError,
    Settings,
    cron_problem,
    load_settings,
    masked_url,
    shown_value,
)

ROOT = Path(__file__).resolve().parents[2]
STEP_SERVICES = [
    "INTEGRATION_MANAGER", "RISK_ANALYTICS", "ML_SERVICE", "FORECASTING", "RECOMMENDATIONS", "ADAPTIVE_LEARNING",
]  # fmt: skip


def test_every_entry_point_of_a_checkout_defaults_to_the_store_make_run_uses(monkeypatch, tmp_path):
    # The CLI recipes (docs/batch-jobs.md) set DAGSTER_HOME=var/dagster; `make run` sets DATABASE_URL=var/wrk.db. Both
    # must open one store, whatever DAGSTER_HOME or the working folder.
    spec = importlib.util.spec_from_file_location("supervise", ROOT / "scripts" / "supervise.py")
    supervise = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "supervise", supervise)
    spec.loader.exec_module(supervise)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    make_run = supervise.environment()["DATABASE_URL"]
    for home in (None, str(ROOT / "var" / "dagster"), str(tmp_path)):
        if home is not None:
            monkeypatch.setenv("DAGSTER_HOME", home)
        monkeypatch.chdir(tmp_path)
        assert Settings().database_url == make_run == f"sqlite:///{ROOT / 'var' / 'wrk.db'}"


def test_production_refuses_the_development_secrets(monkeypatch):
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValidationError, match="JWT_SECRET, GITHUB_WEBHOOK_SECRET"):
        Settings(environment="production")


def _production_env(monkeypatch, **overrides: str) -> None:
    env = {
        "ENVIRONMENT": "production",
        "JWT_SECRET": "a-real-secret-of-enough-length-0123456789",
        "GITHUB_WEBHOOK_SECRET": "another-real-secret",
        "HITL_LINK_SECRET": "a-third-real-secret-for-approval-links",
        "WRK_API_URL": "https://api.wrk.example",
        "WRK_API_TOKEN": "wrk-real-token",
        "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_TOKEN": "ghp_real",
        "INTEGRATIONS_API_URL": "https://integrations.example",
        "INTEGRATIONS_API_TOKEN": "integrations-real-token",
        "PAYMENTS_API_URL": "https://payments.example",
        "PAYMENTS_API_KEY": "sk_live_real",
        "BATCH_TRANSPORT": "outbox",
        **{f"SERVICE_{name}_URL": f"http://{name.lower()}.svc" for name in STEP_SERVICES},
        **overrides,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_production_refuses_the_development_approval_link_secret(monkeypatch):
    _production_env(monkeypatch)
    monkeypatch.delenv("HITL_LINK_SECRET")
    with pytest.raises(ValidationError, match="HITL_LINK_SECRET"):
        Settings()


def test_production_starts_with_its_own_secrets_and_services(monkeypatch):
    _production_env(monkeypatch)
    assert Settings().environment == "production"


def test_production_refuses_the_sandbox_defaults(monkeypatch):
    _production_env(monkeypatch)
    for name in ("WRK_API_URL", "WRK_API_TOKEN", "GITHUB_API_URL", "GITHUB_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ValidationError, match="WRK_API_URL, WRK_API_TOKEN, GITHUB_API_URL, GITHUB_TOKEN"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WRK_API_URL", "http://localhost:8900"),
        ("GITHUB_API_URL", "http://127.0.0.1:8900/github"),
        ("WRK_API_TOKEN", "sandbox-token"),
        ("GITHUB_TOKEN", "sandbox-token"),
        ("INTEGRATIONS_API_URL", "http://127.0.0.1:8900/integrations"),
        ("INTEGRATIONS_API_TOKEN", "sandbox-token"),
        ("PAYMENTS_API_URL", "http://localhost:8900/payments"),
        ("PAYMENTS_API_KEY", "sk_test_sandbox"),
        ("SERVICE_ML_SERVICE_URL", "http://127.0.0.1:8900/services/ml_service"),
    ],
)
def test_production_refuses_each_sandbox_setting(monkeypatch, name, value):
    _production_env(monkeypatch, **{name: value})
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_production_refuses_the_sandbox_on_another_port(monkeypatch):
    _production_env(monkeypatch, SANDBOX_PORT="9900", WRK_API_URL="http://127.0.0.1:9900")
    with pytest.raises(ValidationError, match="WRK_API_URL"):
        Settings()


def test_development_accepts_the_sandbox(monkeypatch):
    for name in ("ENVIRONMENT", "WRK_API_URL", "WRK_API_TOKEN", "GITHUB_API_URL", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().wrk_api_url == "http://127.0.0.1:8900"


def test_the_sandbox_urls_and_smtp_port_follow_sandbox_port_as_under_make_run(monkeypatch):
    """`wrk-orch deploy`, `rollback` or `reconcile-deployments` beside a stack started with another
    SANDBOX_PORT talk to that stack's sandbox (not to whatever listens on :8900); set ones are kept."""
    for name in ("WRK_API_URL", "GITHUB_API_URL", "SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDBOX_PORT", "8990")
    derived = Settings()
    assert (derived.wrk_api_url, derived.github_api_url, derived.smtp_port) == (
        "http://127.0.0.1:8990",
        "http://127.0.0.1:8990/github",
        9015,
    )
    monkeypatch.setenv("WRK_API_URL", "http://127.0.0.1:7000")
    monkeypatch.setenv("SMTP_PORT", "2525")
    explicit = Settings()
    assert (explicit.wrk_api_url, explicit.github_api_url, explicit.smtp_port) == (
        "http://127.0.0.1:7000",
        "http://127.0.0.1:8990/github",
        2525,
    )
    monkeypatch.delenv("SANDBOX_PORT")
    monkeypatch.delenv("WRK_API_URL")
    monkeypatch.delenv("SMTP_PORT")
    assert (Settings().wrk_api_url, Settings().smtp_port) == ("http://127.0.0.1:8900", 8925)


def test_production_refuses_a_step_service_left_to_the_sandbox(monkeypatch):
    """An unset SERVICE_<NAME>_URL falls back to the sandbox's emulator (resources/services.py)."""
    _production_env(monkeypatch)
    monkeypatch.delenv("SERVICE_FORECASTING_URL")
    monkeypatch.delenv("PAYMENTS_API_KEY")
    with pytest.raises(ValidationError, match="PAYMENTS_API_KEY, SERVICE_FORECASTING_URL"):
        Settings()


# Every setting that holds a secret, set to a value no message may show.
SECRETS = {
    "DATABASE_URL": "postgresql://wrk:db-pass-1f3a@127.0.0.1:1/wrk",
    "RABBITMQ_URL": "amqp://wrk:amqp-pass-7c2e@broker.example:5672/%2F",
    "CELERY_BROKER_URL": "amqp://wrk:celery-pass-9d4b@broker.example:5672/%2F",
    "JWT_SECRET": "jwt-secret-value-5e6f-0123456789abcdef",
    "GITHUB_WEBHOOK_SECRET": "webhook-secret-value-8a9b",
    "HITL_LINK_SECRET": "link-secret-value-2c3d-0123456789abcdef",
    "WRK_API_TOKEN": "wrk-token-value-4e5f",
    "GITHUB_TOKEN": "ghp_token-value-6a7b",
    "INTEGRATIONS_API_TOKEN": "integrations-token-value-8c9d",
    "PAYMENTS_API_KEY": "sk_live_value-0e1f",
    "METRICS_TOKEN": "metrics-token-value-2a3b",
    "RELEASE_GPG_PASSPHRASE": "gpg-passphrase-value-4c5d",
    "GITHUB_APP_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----app-key-value-6e7f",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/slack-path-value-8a9b",
}
SECRET_WORDS = (
    ["db-pass-1f3a", "amqp-pass-7c2e", "celery-pass-9d4b"]
    + [value for name, value in SECRETS.items() if not name.endswith("_URL")]
    + ["slack-path-value-8a9b"]
)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"ENVIRONMENT": "production"}, id="production-guard"),
        pytest.param({"DATABASE_URL": "postgresql://wrk:db-pass-1f3a@127.0.0.1:port/wrk"}, id="database-url-bad-port"),
        pytest.param({"DATABASE_URL": "nosuchdb://wrk:db-pass-1f3a@host/wrk"}, id="database-url-unknown-dialect"),
        pytest.param({"DATABASE_URL": "wrk:db-pass-1f3a@host/wrk"}, id="database-url-no-scheme"),
    ],
)
def test_no_settings_error_shows_a_secret(monkeypatch, overrides):
    for name, value in {**SECRETS, **overrides}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert [word for word in SECRET_WORDS if word in message] == []


def test_a_database_url_that_cannot_be_opened_is_named_with_its_password_masked(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://wrk:db-pass-1f3a@127.0.0.1:port/wrk")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value) == (
        "DATABASE_URL='postgresql://***@127.0.0.1:port/wrk': expected a database URL SQLAlchemy can open, "
        "such as sqlite:///var/wrk.db or postgresql://user:password@host:5432/wrk"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://wrk:pw@db.example:5432/wrk", "postgresql://wrk:***@db.example:5432/wrk"),
        ("amqp://guest:pw@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("postgresql://wrk:pw@db:port/wrk", "postgresql://***@db:port/wrk"),
        ("wrk:pw@db/wrk", "***@db/wrk"),
        ("sqlite:///var/wrk.db", "sqlite:///var/wrk.db"),
    ],
)
def test_masked_url_hides_the_password(url, shown):
    assert masked_url(url) == shown


def test_wrk_orch_names_an_unreachable_store_with_its_password_masked(monkeypatch, capsys):
    from cli.main import main
    from domain.core.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", SECRETS["DATABASE_URL"])
    get_settings.cache_clear()
    try:
        assert main(["queue", "stats"]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "postgresql://wrk:***@127.0.0.1:1/wrk" in err and "db-pass-1f3a" not in err


def test_wrk_orch_reports_invalid_settings_in_one_message_without_secrets(monkeypatch, capsys):
    from cli.main import main
    from domain.core.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", "postgresql://wrk:db-pass-1f3a@127.0.0.1:port/wrk")
    get_settings.cache_clear()
    try:
        assert main(["queue", "stats"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("wrk-orch: configuration: DATABASE_URL='postgresql://***@") and "db-pass-1f3a" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BATCH_OUTCOME_SYNC_CRON", "61 * * * *", "expected five fields: minute (0-59) hour (0-23)"),
        ("BATCH_MODEL_MONITORING_CRON", "0 6 * *", "expected five fields"),
        ("BATCH_PROPAGATION_CRON", "0 0 * * * *", "expected five fields"),  # seconds: Dagster refuses them
        ("BATCH_ACCOUNT_HEALTH_CRON", "0 0 30 2 *", "expected a day that exists"),
        ("BATCH_TIMEZONE", "Mars/Olympus", "expected a time zone of the IANA database"),
        ("BATCH_START", "yesterday", "expected an ISO 8601 date or date-time"),
        ("LOG_FORMAT", "xml", "Input should be 'json' or 'text'"),
    ],
)
def test_a_misconfiguration_is_one_line_naming_the_setting_its_value_and_what_is_expected(
    monkeypatch, variable, value, expected
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"{variable}={value!r}: {expected}")
    assert "\n" not in str(refused.value) and "(5 fields)" not in str(refused.value)


def test_every_batch_cron_is_checked_and_the_defaults_pass(monkeypatch):
    crons = [name for name in Settings.model_fields if name.startswith("batch_") and name.endswith("_cron")]
    assert len(crons) == 7
    for name in crons:
        assert cron_problem(Settings.model_fields[name].default) is None
        monkeypatch.setenv(name.upper(), "* * *")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert [part.split("=")[0] for part in str(refused.value).split("; ")] == [name.upper() for name in crons]


def test_a_secret_setting_is_never_shown_in_a_configuration_line():
    assert shown_value("jwt_secret", "s3cret") == "'**********'"
    assert shown_value("rabbitmq_url", "amqp://u:s3cret@h/") == "'**********'"
    assert shown_value("slack_webhook_url", "https://u:s3cret@hooks.example/x") == "'https://u:***@hooks.example/x'"


def test_wrk_orch_refuses_a_store_not_migrated_naming_it_and_the_command(monkeypatch, capsys, tmp_path):
    from cli.main import main
    from domain.core.settings import get_settings

    store = tmp_path / "fresh.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{store}")
    get_settings.cache_clear()
    try:
        assert main(["queue", "stats"]) == 1
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert str(store) in err and "`wrk-orch migrate`" in err and "no such table" not in err


def test_production_without_a_broker_is_refused_unless_the_outbox_is_chosen(monkeypatch):
    _production_env(monkeypatch)
    monkeypatch.delenv("BATCH_TRANSPORT")
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    with pytest.raises(ValidationError, match=r"RABBITMQ_URL unset \(set it, or BATCH_TRANSPORT=outbox\)"):
        Settings()
    monkeypatch.setenv("RABBITMQ_URL", "amqp://wrk:pw@broker.example:5672/%2F")
    assert Settings().batch_transport == "rabbitmq"
    monkeypatch.setenv("BATCH_TRANSPORT", "outbox")  # chosen explicitly: the broker only drains events
    assert Settings().batch_transport == "outbox"


def test_the_broker_transport_needs_its_url_and_development_defaults_to_the_outbox(monkeypatch):
    monkeypatch.delenv("RABBITMQ_URL", raising=False)
    assert Settings(environment="development").batch_transport == "outbox"
    with pytest.raises(ValidationError, match="BATCH_TRANSPORT=rabbitmq needs RABBITMQ_URL"):
        Settings(batch_transport="rabbitmq")


def test_an_override_of_an_optional_secret_stays_a_secret():
    """A resource's field laid over the settings (resources/dagster_resources.py settings_with)."""
    settings = Settings().with_overrides(github_app_private_key="-----BEGIN PRIVATE KEY-----", github_app_id="7")
    assert isinstance(settings.github_app_private_key, SecretStr)
    assert settings.github_app_private_key.get_secret_value() == "-----BEGIN PRIVATE KEY-----"
    assert "BEGIN" not in repr(settings) and settings.github_app_id == "7"


def test_a_read_that_started_before_cache_clear_is_not_kept(monkeypatch):
    # A background thread (the sandbox's event loop, say) reading the settings while a test changes the
    # environment and clears the cache must not leave the old settings cached for everyone after it.
    import threading

    from domain.core import settings as settings_module

    cache = settings_module._SettingsCache()
    started, release = threading.Event(), threading.Event()
    reads: list[str] = []

    def slow_load() -> Settings:
        reads.append(threading.current_thread().name)
        read = Settings()
        if threading.current_thread().name == "background":
            started.set()
            release.wait(30)
        return read

    monkeypatch.setattr(settings_module, "load_settings", slow_load)
    monkeypatch.setenv("PHASE_BATCH_SIZE", "7")
    seen: list[Settings] = []
    background = threading.Thread(target=lambda: seen.append(cache()), name="background")
    background.start()
    assert started.wait(30)
    monkeypatch.setenv("PHASE_BATCH_SIZE", "9")
    cache.cache_clear()
    release.set()
    background.join(30)
    assert seen[0].phase_batch_size == 7  # the read from before the change goes to its own caller only
    assert cache().phase_batch_size == 9  # the next caller reads the environment again
    assert cache().phase_batch_size == 9
    assert reads == ["background", "MainThread"]
