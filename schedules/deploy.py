"""Deploy reconciliation's schedule: every fifteen minutes."""

import dagster as dg

from orchestration_defs.deploy import reconcile_deployments

reconcile_deployments_schedule = dg.ScheduleDefinition(
    job=reconcile_deployments, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
