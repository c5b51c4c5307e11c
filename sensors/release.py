"""The release area's sensors: the queue sensor launching release_build, and the run-status sensors
that end a release whose run failed or was canceled outside its ops."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from domain.core.store import transaction
from domain.release import release as rel
from orchestration_defs.release import release_build
from resources.dagster_resources import DatabaseResource
from sensors.queue import queue_sensor


def _run_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    config = {k: payload[k] for k in ("tag", "name", "prerelease", "repositories") if payload.get(k) is not None}
    return {"ops": {"start_release": {"config": config}}}


release_queue_sensor = queue_sensor("release", release_build, _run_config)


def _end_release_of(context: dg.RunStatusSensorContext, database: DatabaseResource, how: str) -> None:
    run = context.dagster_run
    with transaction(database.engine) as session:
        ended = rel.fail_run(session, run.run_id, f"run {run.run_id} {how}")
    if ended:
        context.log.warning(f"release {ended}: run {run.run_id} {how}; release failed")


@dg.run_failure_sensor(
    name="release_failure_sensor",
    monitored_jobs=[release_build],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A release run failed outside its ops (killed, crashed): its release ends failed.",
)
def release_failure_sensor(context: dg.RunFailureSensorContext, database: DatabaseResource) -> None:
    message = context.failure_event.message or "failed"
    _end_release_of(context, database, f"failed: {message}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    name="release_cancel_sensor",
    monitored_jobs=[release_build],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="A release run was canceled: its release ends failed.",
)
def release_cancel_sensor(context: dg.RunStatusSensorContext, database: DatabaseResource) -> None:
    _end_release_of(context, database, "was canceled")
