"""What the outbox sensors ask Dagster before they launch a delivery run: is one already in flight?"""

from __future__ import annotations

import dagster as dg

IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def in_flight(instance: dg.DagsterInstance, job_name: str) -> bool:
    """True while a run of `job_name` is queued or running: one delivery run at a time is enough."""
    return bool(instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1))
