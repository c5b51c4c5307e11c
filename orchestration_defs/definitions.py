"""The one Definitions of the code location, merged from the flows' areas."""

import dagster as dg

from orchestration_defs.batch_jobs import (
    batch_messages_relay_sensor,
    build_batch_jobs,
    relay_batch_messages,
)
from orchestration_defs.build import build_automation_version, build_queue_sensor
from orchestration_defs.deploy import reconcile_deployments, reconcile_deployments_schedule
from orchestration_defs.phases import phase_batch, phase_batch_failure_sensor, phase_queue_sensor
from orchestration_defs.release import (
    release_build,
    release_cancel_sensor,
    release_failure_sensor,
    release_queue_sensor,
)
from orchestration_defs.workflows import (
    approval_queue_sensor,
    workflow_events_sensor,
    workflow_execution,
    workflow_queue_sensor,
)
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
from schedules.approvals import approval_sweeper, approval_sweeper_sensor
from schedules.sweeper import deliver_notifications, outbox_sensor, queue_sweeper, queue_sweeper_schedule
from sensors.queue import QUEUE_STATUS_SENSORS


def build_definitions() -> dg.Definitions:
    batch_assets, batch_asset_jobs, batch_schedules = build_batch_jobs()
    return dg.Definitions(
        assets=batch_assets,
        jobs=[
            build_automation_version,
            release_build,
            reconcile_deployments,
            queue_sweeper,
            deliver_notifications,
            relay_batch_messages,
            workflow_execution,
            approval_sweeper,
            phase_batch,
            *batch_asset_jobs,
        ],
        schedules=[queue_sweeper_schedule, reconcile_deployments_schedule, *batch_schedules],
        sensors=[
            batch_messages_relay_sensor,
            build_queue_sensor,
            release_queue_sensor,
            release_failure_sensor,
            release_cancel_sensor,
            outbox_sensor,
            workflow_queue_sensor,
            approval_queue_sensor,
            workflow_events_sensor,
            approval_sweeper_sensor,
            phase_queue_sensor,
            phase_batch_failure_sensor,
            *QUEUE_STATUS_SENSORS,
        ],
        resources={
            # Each field from its environment variable where set, else the settings' default (see
            # resources/dagster_resources.py); the broker follows RABBITMQ_URL and BATCH_TRANSPORT.
            "database": DatabaseResource(url=env_or_default("DATABASE_URL")),
            "wrk": WrkPlatformResource(base_url=env_or_default("WRK_API_URL"), token=env_or_default("WRK_API_TOKEN")),
            "github": GitHubResource(base_url=env_or_default("GITHUB_API_URL"), token=env_or_default("GITHUB_TOKEN")),
            "notifications": NotificationsResource(
                smtp_port=env_or_default("SMTP_PORT", int), slack_webhook_url=env_or_default("SLACK_WEBHOOK_URL")
            ),
            "batch_publisher": BatchPublisherResource(
                queue=env_or_default("BI_BATCH_JOBS_QUEUE"), exchange=env_or_default("BI_BATCH_JOBS_EXCHANGE")
            ),
            "services": ServicesResource(),
            "integrations": IntegrationsResource(
                base_url=env_or_default("INTEGRATIONS_API_URL"), token=env_or_default("INTEGRATIONS_API_TOKEN")
            ),
            "payments": PaymentsResource(
                base_url=env_or_default("PAYMENTS_API_URL"), api_key=env_or_default("PAYMENTS_API_KEY")
            ),
            "approval_callbacks": ApprovalCallbacksResource(),
        },
    )


defs = build_definitions()
