"""Sensors for work that is due in the store (notifications to send, messages to relay, approvals to
expire, callbacks to call): count it, and launch one run of the job that does it when some is due and
none is in flight. An idle system launches no runs, and one run at a time is enough: it takes all that
is due."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

IN_FLIGHT = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

# What is due, by the run tag that carries its count (the run's page in the UI says why it was launched).
CountDue = Callable[[Any], Mapping[str, int]]
# A reason not to look at all (the job has nothing to do in this configuration), or None.
Idle = Callable[[Any], str | None]


def runs_in_flight(instance: dg.DagsterInstance, job_name: str) -> int:
    """Runs of `job_name` queued or running."""
    return int(instance.get_runs_count(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)))


def due_work_sensor(
    job: dg.JobDefinition,
    count_due: CountDue,
    *,
    name: str,
    description: str,
    minimum_interval_seconds: int,
    busy: str,
    nothing_due: str = "nothing due",
    idle: Idle | None = None,
    resource_keys: frozenset[str] = frozenset({"database"}),
) -> dg.SensorDefinition:
    """A sensor launching one `job` run, tagged with the counts `count_due` finds (given the sensor's
    resources), when any is due and no run of `job` is in flight; `busy` and `nothing_due` are its skip
    reasons, `idle` an earlier one."""

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
        required_resource_keys=set(resource_keys),
    )
    def _sensor(context: dg.SensorEvaluationContext, **_resources: Any) -> dg.SensorResult:
        # The resources are read from the context; called directly, Dagster also passes them by name.
        reason = idle(context.resources) if idle else None
        if reason:
            return dg.SensorResult(skip_reason=reason)
        if runs_in_flight(context.instance, job.name):
            return dg.SensorResult(skip_reason=busy)
        due = count_due(context.resources)
        if not any(due.values()):
            return dg.SensorResult(skip_reason=nothing_due)
        return dg.SensorResult(run_requests=[dg.RunRequest(tags={tag: str(n) for tag, n in due.items()})])

    return _sensor
