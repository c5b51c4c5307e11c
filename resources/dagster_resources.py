"""The Dagster resources: thin `ConfigurableResource`s over the plain clients of this package, the one
module of `resources/` that imports Dagster (so the HTTP API uses the same clients without loading it).

Configuration: the definitions set each field from its environment variable (`dg.EnvVar`) when that
variable is set, so the UI's resource page names it. A field left `None` takes the settings' value at
setup time: the variable's documented default, which may follow another setting (the sandbox's URLs
follow SANDBOX_PORT; SMTP_PORT is SANDBOX_PORT + 25). What has no field (timeouts, the retry policy) comes
from the settings too.

Lifetime: a client is opened in `setup_for_execution` and closed in `teardown_after_execution`, once per
run and process (each step's process under the multiprocess executor), so no op opens or closes one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, TypeAdapter
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain.core.migrate import require_migrated
from domain.core.settings import Settings, get_settings
from domain.core.store import engine_for, transaction
from resources.approval_callbacks import CallbackClient, callback_client
from resources.batch_publisher import BatchPublisher
from resources.github import GitHubClient, github_client
from resources.integrations import IntegrationsClient, integrations_client
from resources.notifications import Notifier, notifier
from resources.payments import PaymentsClient, payments_client
from resources.services import Services
from resources.wrk import WrkPlatformClient, wrk_client

UNSET = "None: the settings' default"
CALLBACK_HOSTS = TypeAdapter(list[str])  # APPROVAL_CALLBACK_HOSTS' format, as the settings read it


def settings_with(**fields: object) -> Settings:
    """The settings with the resource's fields laid over them (a `None` field keeps the settings' value)."""
    return get_settings().with_overrides(**fields)


def _closed(name: str) -> RuntimeError:
    return RuntimeError(f"the {name} resource is not set up: use it from a Dagster run (or dg.build_resources)")


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The store: the same engine and sessions the HTTP API uses (a pooled engine per URL, shared by the
    process, so nothing is closed per run). A store not migrated is refused (StoreNotMigrated names it and
    `wrk-orch migrate`)."""

    url: str | None = Field(default=None, description=f"DATABASE_URL ({UNSET}: the checkout's var/wrk.db)")

    @property
    def engine(self) -> Engine:
        return require_migrated(engine_for(self.url or get_settings().database_url))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.engine) as session:
            yield session


class WrkPlatformResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The WRK Platform's client, open for the run."""

    base_url: str | None = Field(default=None, description=f"WRK_API_URL ({UNSET}: the sandbox)")
    token: str | None = Field(default=None, description=f"WRK_API_TOKEN ({UNSET}: the sandbox's token)")
    _client: WrkPlatformClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = wrk_client(settings_with(wrk_api_url=self.base_url, wrk_api_token=self.token))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> WrkPlatformClient:
        if self._client is None:
            raise _closed("wrk")
        return self._client


class GitHubResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """GitHub's client, open for the run (a token, or a GitHub App when GITHUB_APP_ID is set)."""

    base_url: str | None = Field(default=None, description=f"GITHUB_API_URL ({UNSET}: the sandbox's GitHub)")
    token: str | None = Field(default=None, description=f"GITHUB_TOKEN ({UNSET}: the sandbox's token)")
    app_id: str | None = Field(default=None, description=f"GITHUB_APP_ID ({UNSET}: no App, the token)")
    app_private_key: str | None = Field(
        default=None, description=f"GITHUB_APP_PRIVATE_KEY, PEM text or a PEM file's path ({UNSET})"
    )
    app_installation_id: str | None = Field(
        default=None, description=f"GITHUB_APP_INSTALLATION_ID ({UNSET}: looked up for the owner)"
    )
    _client: GitHubClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = github_client(
            settings_with(
                github_api_url=self.base_url,
                github_token=self.token,
                github_app_id=self.app_id,
                github_app_private_key=self.app_private_key,
                github_app_installation_id=self.app_installation_id,
            )
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> GitHubClient:
        if self._client is None:
            raise _closed("github")
        return self._client


class NotificationsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The notifier (SMTP and Slack), open for the run."""

    smtp_host: str | None = Field(default=None, description=f"SMTP_HOST ({UNSET}: 127.0.0.1)")
    smtp_port: int | None = Field(default=None, description=f"SMTP_PORT ({UNSET}: SANDBOX_PORT + 25)")
    smtp_sender: str | None = Field(default=None, description=f"SMTP_SENDER ({UNSET}: orchestration@wrk.local)")
    slack_webhook_url: str | None = Field(default=None, description=f"SLACK_WEBHOOK_URL ({UNSET}: no Slack)")
    _notifier: Notifier | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._notifier = notifier(
            settings_with(
                smtp_host=self.smtp_host,
                smtp_port=self.smtp_port,
                smtp_sender=self.smtp_sender,
                slack_webhook_url=self.slack_webhook_url,
            )
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._notifier is not None:
            self._notifier.close()

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise _closed("notifications")
        return self._notifier


class ServicesResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The workflow steps' services, a client each made on first use and all closed after the run."""

    integration_manager_url: str | None = Field(
        default=None, description=f"SERVICE_INTEGRATION_MANAGER_URL ({UNSET}: the sandbox's emulator)"
    )
    risk_analytics_url: str | None = Field(
        default=None, description=f"SERVICE_RISK_ANALYTICS_URL ({UNSET}: the sandbox's emulator)"
    )
    ml_service_url: str | None = Field(
        default=None, description=f"SERVICE_ML_SERVICE_URL ({UNSET}: the sandbox's emulator)"
    )
    forecasting_url: str | None = Field(
        default=None, description=f"SERVICE_FORECASTING_URL ({UNSET}: the sandbox's emulator)"
    )
    recommendations_url: str | None = Field(
        default=None, description=f"SERVICE_RECOMMENDATIONS_URL ({UNSET}: the sandbox's emulator)"
    )
    adaptive_learning_url: str | None = Field(
        default=None, description=f"SERVICE_ADAPTIVE_LEARNING_URL ({UNSET}: the sandbox's emulator)"
    )
    _services: Services | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._services = Services(
            settings_with(
                service_integration_manager_url=self.integration_manager_url,
                service_risk_analytics_url=self.risk_analytics_url,
                service_ml_service_url=self.ml_service_url,
                service_forecasting_url=self.forecasting_url,
                service_recommendations_url=self.recommendations_url,
                service_adaptive_learning_url=self.adaptive_learning_url,
            )
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._services is not None:
            self._services.close()

    @property
    def services(self) -> Services:
        if self._services is None:
            raise _closed("services")
        return self._services


class IntegrationsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The integrations backend's client, open for the run."""

    base_url: str | None = Field(default=None, description=f"INTEGRATIONS_API_URL ({UNSET}: the sandbox's)")
    token: str | None = Field(default=None, description=f"INTEGRATIONS_API_TOKEN ({UNSET}: the sandbox's)")
    callback_url: str | None = Field(
        default=None, description=f"PHASE_CALLBACK_URL, this API as the backend reaches it ({UNSET}: on API_PORT)"
    )
    _client: IntegrationsClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        settings = settings_with(
            integrations_api_url=self.base_url, integrations_api_token=self.token, phase_callback_url=self.callback_url
        )
        self._client = integrations_client(settings)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> IntegrationsClient:
        if self._client is None:
            raise _closed("integrations")
        return self._client


class PaymentsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The payments API's client, open for the run."""

    base_url: str | None = Field(default=None, description=f"PAYMENTS_API_URL ({UNSET}: the sandbox's)")
    api_key: str | None = Field(default=None, description=f"PAYMENTS_API_KEY ({UNSET}: the sandbox's)")
    _client: PaymentsClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = payments_client(settings_with(payments_api_url=self.base_url, payments_api_key=self.api_key))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> PaymentsClient:
        if self._client is None:
            raise _closed("payments")
        return self._client


class ApprovalCallbacksResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The client that calls standalone approvals' callback URLs, open for the run: only the allowed
    hosts, each body signed with a key derived from the approvals' link secret."""

    allowed_hosts: str | None = Field(
        default=None, description=f"APPROVAL_CALLBACK_HOSTS, a JSON list ({UNSET}: any host)"
    )
    link_secret: str | None = Field(
        default=None, description=f"HITL_LINK_SECRET ({UNSET}: the development secret, refused in production)"
    )
    _client: CallbackClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        hosts = CALLBACK_HOSTS.validate_json(self.allowed_hosts) if self.allowed_hosts else None
        self._client = callback_client(settings_with(approval_callback_hosts=hosts, hitl_link_secret=self.link_secret))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def client(self) -> CallbackClient:
        if self._client is None:
            raise _closed("approval_callbacks")
        return self._client


class BatchPublisherResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where batch-job triggers go (resources/batch_publisher.py): the outbox, and a broker when one is
    configured (RABBITMQ_URL here, or BATCH_TRANSPORT=rabbitmq with RABBITMQ_URL); its connection is
    closed after the run."""

    rabbitmq_url: str | None = Field(
        default=None,
        description="a broker to publish to whatever BATCH_TRANSPORT says (None: RABBITMQ_URL when "
        "BATCH_TRANSPORT=rabbitmq, else the outbox)",
    )
    queue: str | None = Field(default=None, description=f"BI_BATCH_JOBS_QUEUE ({UNSET})")
    exchange: str | None = Field(default=None, description=f"BI_BATCH_JOBS_EXCHANGE ({UNSET})")
    _publisher: BatchPublisher | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._publisher = BatchPublisher(
            get_settings(), rabbitmq_url=self.rabbitmq_url or "", queue=self.queue or "", exchange=self.exchange
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._publisher is not None:
            self._publisher.close()

    @property
    def publisher(self) -> BatchPublisher:
        if self._publisher is None:
            raise _closed("batch_publisher")
        return self._publisher


def env_or_default(name: str, kind: type = str) -> Any:
    """`dg.EnvVar(name)` when the variable is set, else `None` (the field's settings default): an EnvVar
    of an unset variable fails the run, and most variables have defaults derived from others."""
    if not os.environ.get(name):
        return None
    return dg.EnvVar.int(name) if kind is int else dg.EnvVar(name)
