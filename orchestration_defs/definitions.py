"""The one Definitions of the code location, merged from the areas' own: each area (build, deploy,
release, batch, workflows, phases, housekeeping) lists its jobs or assets, its schedules and sensors, and
the resources they use. Jobs, ops and assets are in orchestration_defs/<area>.py, sensors in sensors/,
schedules in schedules/; only this module imports all three."""

from domain.core.settings import exit_when_misconfigured, get_settings

# The code server, the daemon and every run worker load this module, and the modules below read the settings
# as they are imported: settings they cannot use end the process here with one line and the configuration's
# exit status (which the supervisor does not restart), before any import turns them into a traceback.
with exit_when_misconfigured("code location"):
    get_settings()

from collections.abc import Mapping

import dagster as dg

from orchestration_defs.approvals import approval_sweeper
from orchestration_defs.batch_jobs import build_batch_jobs, freshness_checks, relay_batch_messages
from orchestration_defs.build import build_automation_version
from orchestration_defs.deploy import reconcile_deployments
from orchestration_defs.housekeeping import deliver_notifications, queue_sweeper
from orchestration_defs.phases import phase_worker
from orchestration_defs.release import release_build
from orchestration_defs.workflows import workflow_execution
from resources.dagster_resources import (
    ApprovalCallbacksResource,
    BatchPublisherResource,
    DatabaseResource,
    GitHubResource,
    IntegrationsResource,
    NotificationsResource,
    PaymentsResource,
    ServicesResource,
    WrkPlatformResource,
    env_or_default,
)
from schedules.batch import build_batch_schedules
from schedules.deploy import reconcile_deployments_schedule
from schedules.housekeeping import queue_sweeper_schedule
from sensors.batch import batch_messages_relay_sensor, build_freshness_sensor
from sensors.build import build_queue_sensor
from sensors.housekeeping import outbox_sensor
from sensors.phases import phase_queue_sensor
from sensors.queue import QUEUE_STATUS_SENSORS
from sensors.release import release_cancel_sensor, release_failure_sensor, release_queue_sensor
from sensors.workflows import (
    approval_queue_sensor,
    approval_sweeper_sensor,
    workflow_events_sensor,
    workflow_queue_sensor,
)

Resources = Mapping[str, dg.ConfigurableResource]  # type: ignore[type-arg]


def configured_resources() -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    """One instance per key, shared by every area that uses it (Definitions.merge refuses two different
    ones). Each field from its environment variable where set, else the settings' default (see
    resources/dagster_resources.py); the broker follows RABBITMQ_URL and BATCH_TRANSPORT."""
    return {
        "database": DatabaseResource(url=env_or_default("DATABASE_URL")),
        "wrk": WrkPlatformResource(base_url=env_or_default("WRK_API_URL"), token=env_or_default("WRK_API_TOKEN")),
        "github": GitHubResource(
            base_url=env_or_default("GITHUB_API_URL"),
            token=env_or_default("GITHUB_TOKEN"),
            app_id=env_or_default("GITHUB_APP_ID"),
            app_private_key=env_or_default("GITHUB_APP_PRIVATE_KEY"),
            app_installation_id=env_or_default("GITHUB_APP_INSTALLATION_ID"),
        ),
        "notifications": NotificationsResource(
            smtp_host=env_or_default("SMTP_HOST"),
            smtp_port=env_or_default("SMTP_PORT", int),
            smtp_sender=env_or_default("SMTP_SENDER"),
            slack_webhook_url=env_or_default("SLACK_WEBHOOK_URL"),
        ),
        "batch_publisher": BatchPublisherResource(
            queue=env_or_default("BI_BATCH_JOBS_QUEUE"), exchange=env_or_default("BI_BATCH_JOBS_EXCHANGE")
        ),
        "services": ServicesResource(
            integration_manager_url=env_or_default("SERVICE_INTEGRATION_MANAGER_URL"),
            risk_analytics_url=env_or_default("SERVICE_RISK_ANALYTICS_URL"),
            ml_service_url=env_or_default("SERVICE_ML_SERVICE_URL"),
            forecasting_url=env_or_default("SERVICE_FORECASTING_URL"),
            recommendations_url=env_or_default("SERVICE_RECOMMENDATIONS_URL"),
            adaptive_learning_url=env_or_default("SERVICE_ADAPTIVE_LEARNING_URL"),
        ),
        "integrations": IntegrationsResource(
            base_url=env_or_default("INTEGRATIONS_API_URL"),
            token=env_or_default("INTEGRATIONS_API_TOKEN"),
            callback_url=env_or_default("PHASE_CALLBACK_URL"),
        ),
        "payments": PaymentsResource(
            base_url=env_or_default("PAYMENTS_API_URL"), api_key=env_or_default("PAYMENTS_API_KEY")
        ),
        "approval_callbacks": ApprovalCallbacksResource(
            allowed_hosts=env_or_default("APPROVAL_CALLBACK_HOSTS"), link_secret=env_or_default("HITL_LINK_SECRET")
        ),
    }


def _resources(resources: Resources | None, *keys: str) -> dict[str, dg.ConfigurableResource]:  # type: ignore[type-arg]
    """The area's resources, out of the merged location's (or freshly configured for an area on its own)."""
    resources = configured_resources() if resources is None else resources
    return {key: resources[key] for key in keys}


def build_area(resources: Resources | None = None) -> dg.Definitions:
    return dg.Definitions(
        jobs=[build_automation_version],
        sensors=[build_queue_sensor],
        resources=_resources(resources, "database", "wrk"),
    )


def deploy_area(resources: Resources | None = None) -> dg.Definitions:
    return dg.Definitions(
        jobs=[reconcile_deployments],
        schedules=[reconcile_deployments_schedule],
        resources=_resources(resources, "database", "wrk"),
    )


def release_area(resources: Resources | None = None) -> dg.Definitions:
    return dg.Definitions(
        jobs=[release_build],
        sensors=[release_queue_sensor, release_failure_sensor, release_cancel_sensor],
        resources=_resources(resources, "database", "github"),
    )


def batch_area(resources: Resources | None = None) -> dg.Definitions:
    assets, asset_jobs = build_batch_jobs()
    checks = freshness_checks(assets, get_settings())
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[relay_batch_messages, *asset_jobs],
        schedules=build_batch_schedules(asset_jobs),
        sensors=[batch_messages_relay_sensor, build_freshness_sensor(checks)],
        resources=_resources(resources, "database", "batch_publisher"),
    )


def workflows_area(resources: Resources | None = None) -> dg.Definitions:
    """Workflow executions and the approvals that pause them."""
    return dg.Definitions(
        jobs=[workflow_execution, approval_sweeper],
        sensors=[workflow_queue_sensor, approval_queue_sensor, workflow_events_sensor, approval_sweeper_sensor],
        resources=_resources(resources, "database", "services", "approval_callbacks"),
    )


def phases_area(resources: Resources | None = None) -> dg.Definitions:
    return dg.Definitions(
        jobs=[phase_worker],
        sensors=[phase_queue_sensor],
        resources=_resources(resources, "database", "integrations", "payments"),
    )


def housekeeping_area(resources: Resources | None = None) -> dg.Definitions:
    """The queue's sweeper and run-status sensors (every queued kind's), the notifications outbox."""
    return dg.Definitions(
        jobs=[queue_sweeper, deliver_notifications],
        schedules=[queue_sweeper_schedule],
        sensors=[outbox_sensor, *QUEUE_STATUS_SENSORS],
        resources=_resources(resources, "database", "notifications"),
    )


AREAS = (build_area, deploy_area, release_area, batch_area, workflows_area, phases_area, housekeeping_area)


def build_definitions() -> dg.Definitions:
    resources = configured_resources()
    return dg.Definitions.merge(*(area(resources) for area in AREAS))


with exit_when_misconfigured("code location"):  # a cron Dagster refuses (BatchConfigError)
    defs = build_definitions()
