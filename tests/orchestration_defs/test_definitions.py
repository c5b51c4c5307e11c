from __future__ import annotations

import os
import subprocess
from pathlib import Path

from orchestration_defs.definitions import defs

ROOT = Path(__file__).resolve().parents[2]

# The code location's surface, as the Dagster UI lists it. A change here is a change users see.
EXPECTED = {
    "jobs": [
        "build_automation_version",
        "deliver_notifications",
        "queue_sweeper",
        "reconcile_deployments",
        "release_build",
    ],
    "schedules": ["queue_sweeper_schedule", "reconcile_deployments_schedule"],
    "sensors": [
        "build_queue_sensor",
        "outbox_sensor",
        "queue_ack_sensor",
        "queue_cancel_sensor",
        "queue_failure_sensor",
        "release_cancel_sensor",
        "release_failure_sensor",
        "release_queue_sensor",
    ],
}


def _names(items) -> list[str]:
    return sorted(item.name for item in items)


def test_definitions_load_and_list_the_expected_jobs_schedules_and_sensors():
    repo = defs.get_repository_def()
    jobs = [j for j in repo.get_all_jobs() if not j.name.startswith("__")]
    assert {
        "jobs": _names(jobs),
        "schedules": _names(repo.schedule_defs),
        "sensors": _names(repo.sensor_defs),
    } == EXPECTED


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    result = subprocess.run(
        [str(ROOT / ".venv/bin/dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout
