"""The build queue sensor: each `build` trigger launches one build_automation_version run."""

from collections.abc import Mapping
from typing import Any

from orchestration_defs.build import build_automation_version
from sensors.queue import queue_sensor


def _run_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"ops": {"load": {"config": dict(payload)}}}


def _tags(payload: Mapping[str, Any]) -> dict[str, str]:
    return {"wrk/project_id": payload["project_id"], "wrk/automation_version_id": payload["automation_version_id"]}


build_queue_sensor = queue_sensor("build", build_automation_version, _run_config, _tags)
