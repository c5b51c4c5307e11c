"""The queue sweeper's schedule: every five minutes."""

import dagster as dg

from orchestration_defs.housekeeping import queue_sweeper

queue_sweeper_schedule = dg.ScheduleDefinition(
    job=queue_sweeper, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
