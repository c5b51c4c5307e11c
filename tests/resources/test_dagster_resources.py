"""The Dagster resources: configured from the environment in the definitions, their clients opened for a
run and closed after it by Dagster's resource lifecycle, derived defaults still following their setting."""

from __future__ import annotations

import dagster as dg
import pytest

from domain.core.settings import get_settings
from resources.approval_callbacks import signature
from resources.dagster_resources import (
    ApprovalCallbacksResource,
    GitHubResource,
    IntegrationsResource,
    NotificationsResource,
    ServicesResource,
    WrkPlatformResource,
)


@pytest.fixture
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_variable_set_configures_its_field_as_an_env_var_and_one_unset_leaves_the_settings_default(
    monkeypatch, fresh_settings
):
    from orchestration_defs.definitions import build_definitions

    monkeypatch.setenv("WRK_API_URL", "http://127.0.0.1:9701")
    monkeypatch.setenv("WRK_API_TOKEN", "t0ken")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)
    resources = build_definitions().resources
    wrk, github = resources["wrk"], resources["github"]
    assert isinstance(wrk.base_url, dg.EnvVar) and wrk.base_url.env_var_name == "WRK_API_URL"
    assert isinstance(wrk.token, dg.EnvVar) and wrk.token.env_var_name == "WRK_API_TOKEN"
    assert github.base_url is None


def test_an_op_gets_a_client_open_for_the_run_and_closed_after_it(monkeypatch, fresh_settings):
    # No URL set: the fields' None takes the settings' defaults, which follow SANDBOX_PORT.
    for name in ("WRK_API_URL", "GITHUB_API_URL", "SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDBOX_PORT", "9702")
    seen: dict[str, object] = {}

    @dg.op
    def use_clients(wrk: WrkPlatformResource, github: GitHubResource, notifications: NotificationsResource) -> None:
        seen.update(wrk=wrk.client, github=github.client, notifier=notifications.notifier)
        seen["open_during_the_run"] = not wrk.client.http.is_closed and not github.client.http.is_closed

    @dg.job
    def clients_job() -> None:
        use_clients()

    resources = {"wrk": WrkPlatformResource(), "github": GitHubResource(), "notifications": NotificationsResource()}
    assert clients_job.execute_in_process(resources=resources).success
    assert seen["open_during_the_run"] is True
    assert str(seen["wrk"].http.base_url).rstrip("/") == "http://127.0.0.1:9702"
    assert str(seen["github"].http.base_url).rstrip("/") == "http://127.0.0.1:9702/github"
    assert seen["notifier"].mailer.port == 9702 + 25
    assert seen["wrk"].http.is_closed and seen["github"].http.is_closed


def test_a_resource_used_outside_a_run_says_so():
    with pytest.raises(RuntimeError, match="not set up"):
        WrkPlatformResource().client  # noqa: B018


def test_every_resource_names_its_variables_in_the_definitions(monkeypatch, fresh_settings):
    from orchestration_defs.definitions import build_definitions

    fields = {
        "services": {"ml_service_url": "SERVICE_ML_SERVICE_URL", "forecasting_url": "SERVICE_FORECASTING_URL"},
        "approval_callbacks": {"allowed_hosts": "APPROVAL_CALLBACK_HOSTS", "link_secret": "HITL_LINK_SECRET"},
        "integrations": {"callback_url": "PHASE_CALLBACK_URL"},
        "notifications": {"smtp_host": "SMTP_HOST", "smtp_sender": "SMTP_SENDER"},
        "github": {"app_id": "GITHUB_APP_ID", "app_installation_id": "GITHUB_APP_INSTALLATION_ID"},
    }
    for names in fields.values():
        for variable in names.values():
            monkeypatch.setenv(variable, '["billing.internal"]' if variable == "APPROVAL_CALLBACK_HOSTS" else "x")
    monkeypatch.delenv("SERVICE_RISK_ANALYTICS_URL", raising=False)
    resources = build_definitions().resources
    for key, names in fields.items():
        for field, variable in names.items():
            value = getattr(resources[key], field)
            assert isinstance(value, dg.EnvVar) and value.env_var_name == variable, (key, field)
    assert resources["services"].risk_analytics_url is None


def test_the_services_and_approval_callbacks_clients_are_built_from_their_fields(monkeypatch, fresh_settings):
    for name in ("SERVICE_ML_SERVICE_URL", "SERVICE_FORECASTING_URL", "APPROVAL_CALLBACK_HOSTS", "HITL_LINK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDBOX_PORT", "9704")
    secret = "a-link-secret-of-at-least-thirty-two-bytes"
    seen: dict[str, object] = {}

    @dg.op
    def use_clients(
        services: ServicesResource,
        approval_callbacks: ApprovalCallbacksResource,
        integrations: IntegrationsResource,
        notifications: NotificationsResource,
    ) -> None:
        seen["ml_service"] = str(services.services.client("ml_service").http.base_url).rstrip("/")
        seen["forecasting"] = str(services.services.client("forecasting").http.base_url).rstrip("/")
        seen["callback_settings"] = approval_callbacks.client.settings
        seen["callback_url"] = integrations.client.callback_url
        mailer = notifications.notifier.mailer
        seen["mail"] = (mailer.host, mailer.sender)

    @dg.job
    def clients_job() -> None:
        use_clients()

    resources = {
        "services": ServicesResource(ml_service_url="http://127.0.0.1:9705/ml"),
        "approval_callbacks": ApprovalCallbacksResource(allowed_hosts='["billing.internal"]', link_secret=secret),
        "integrations": IntegrationsResource(callback_url="http://api.internal:8000"),
        "notifications": NotificationsResource(smtp_host="mail.internal", smtp_sender="ops@wrk.test"),
    }
    assert clients_job.execute_in_process(resources=resources).success
    assert seen["ml_service"] == "http://127.0.0.1:9705/ml"
    assert seen["forecasting"] == "http://127.0.0.1:9704/services/forecasting"  # unset: the sandbox's emulator
    settings = seen["callback_settings"]
    assert settings.approval_callback_hosts == ["billing.internal"]
    assert settings.hitl_link_secret.get_secret_value() == secret
    assert signature(settings, b"{}") != signature(get_settings(), b"{}")  # signed with the field's secret
    assert seen["callback_url"] == "http://api.internal:8000"
    assert seen["mail"] == ("mail.internal", "ops@wrk.test")
