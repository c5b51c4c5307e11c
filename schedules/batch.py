"""The batch jobs' schedules: one per asset job, on its asset's cron, built from its partitions (default
RUNNING). They are the single scheduler: they run in the Dagster daemon, one per deployment (the seed's
node-cron ran in one "single scheduler instance" too)."""

from typing import Any

import dagster as dg

from domain.batch.batch_jobs import JOBS
from domain.core.settings import Settings, get_settings
from orchestration_defs.batch_jobs import partitions_for


def build_batch_schedules(asset_jobs: list[Any], settings: Settings | None = None) -> list[Any]:
    """A schedule for each of `asset_jobs` (build_batch_jobs' jobs, with the same settings)."""
    settings = settings or get_settings()
    by_job_name = {job.job_name: job for job in JOBS}
    schedules = []
    for asset_job in asset_jobs:
        job = by_job_name[asset_job.name]
        partitions_def = partitions_for(job, settings)
        schedules.append(
            dg.build_schedule_from_partitioned_job(
                asset_job,
                name=f"{job.asset_name}_schedule",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"{job.name} on `{partitions_def.cron_schedule}` ({partitions_def.timezone})",
            )
        )
    return schedules
