"""The one Definitions of the code location, merged from the flows' areas."""

import dagster as dg

from orchestration_defs.build import build_automation_version, build_queue_sensor
from orchestration_defs.deploy import reconcile_deployments, reconcile_deployments_schedule
from orchestration_defs.release import (
    release_build,
    release_cancel_sensor,
    release_failure_sensor,
    release_queue_sensor,
)
from resources.database import DatabaseResource
from resources.github import GitHubResource
from resources.notifications import NotificationsResource
from resources.wrk import WrkPlatformResource
from schedules.sweeper import deliver_notifications, outbox_sensor, queue_sweeper, queue_sweeper_schedule
from sensors.queue import QUEUE_STATUS_SENSORS


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        jobs=[build_automation_version, release_build, reconcile_deployments, queue_sweeper, deliver_notifications],
        schedules=[queue_sweeper_schedule, reconcile_deployments_schedule],
        sensors=[
            build_queue_sensor,
            release_queue_sensor,
            release_failure_sensor,
            release_cancel_sensor,
            outbox_sensor,
            *QUEUE_STATUS_SENSORS,
        ],
        resources={
            "database": DatabaseResource(),
            "wrk": WrkPlatformResource(),
            "github": GitHubResource(),
            "notifications": NotificationsResource(),
        },
    )


defs = build_definitions()
