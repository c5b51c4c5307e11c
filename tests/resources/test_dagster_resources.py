"""The Dagster resources: configured from the environment in the definitions, their clients opened for a
run and closed after it by Dagster's resource lifecycle, derived defaults still following their setting."""

from __future__ import annotations

import dagster as dg
import pytest

from domain.settings import get_settings
from resources.dagster_resources import GitHubResource, NotificationsResource, WrkPlatformResource


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
