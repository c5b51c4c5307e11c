from __future__ import annotations

import os
import subprocess
from pathlib import Path

from orchestration_defs.definitions import defs

ROOT = Path(__file__).resolve().parents[2]

# The code location's surface, as the Dagster UI lists it. A change here is a change users see.
EXPECTED = {
    "jobs": [
        "account_health_job",
        "approval_sweeper",
        "build_automation_version",
        "deliver_notifications",
        "industry_benchmarks_job",
        "model_monitoring_job",
        "outcome_sync_job",
        "phase_worker",
        "propagation_job",
        "queue_sweeper",
        "reconcile_deployments",
        "relay_batch_messages",
        "release_build",
        "risk_clustering_job",
        "risk_snapshot_backfill_job",
        "workflow_execution",
    ],
    "schedules": [
        "account_health_schedule",
        "industry_benchmarks_schedule",
        "model_monitoring_schedule",
        "outcome_sync_schedule",
        "propagation_schedule",
        "queue_sweeper_schedule",
        "reconcile_deployments_schedule",
        "risk_clustering_schedule",
        "risk_snapshot_backfill_schedule",
    ],
    "sensors": [
        "approval_queue_sensor",
        "approval_sweeper_sensor",
        "batch_freshness_checks_sensor",
        "batch_messages_relay_sensor",
        "build_queue_sensor",
        "outbox_sensor",
        "phase_queue_sensor",
        "queue_ack_sensor",
        "queue_cancel_sensor",
        "queue_failure_sensor",
        "release_cancel_sensor",
        "release_failure_sensor",
        "release_queue_sensor",
        "workflow_events_sensor",
        "workflow_queue_sensor",
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
    batch = sorted(key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert batch == [
        "account_health",
        "industry_benchmarks",
        "model_monitoring",
        "outcome_sync",
        "propagation",
        "risk_clustering",
        "risk_snapshot_backfill",
    ]


def test_every_batch_asset_has_its_published_and_freshness_checks():
    checks = sorted((key.asset_key.path[-1], key.name) for key in defs.resolve_asset_graph().asset_check_keys)
    assets = sorted(key.path[-1] for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert checks == sorted((asset, name) for asset in assets for name in ("freshness_check", "message_published"))


def test_every_job_is_tagged_with_its_kind_of_work_so_housekeeping_can_be_filtered():
    """The UI filters jobs and runs by tag: each job carries the `wrk/flow` the run coordinator gives its
    runs, `housekeeping` for the sweepers, relays, deliveries and reconciliation."""
    from orchestration_defs.concurrency import flow_of

    repo = defs.get_repository_def()
    jobs = [j for j in repo.get_all_jobs() if not j.name.startswith("__")]
    assert {job.name: job.tags.get("wrk/flow") for job in jobs} == {job.name: flow_of(job.name) for job in jobs}
    housekeeping = sorted(job.name for job in jobs if job.tags.get("wrk/flow") == "housekeeping")
    assert housekeeping == [
        "approval_sweeper",
        "deliver_notifications",
        "queue_sweeper",
        "reconcile_deployments",
        "relay_batch_messages",
    ]


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


def test_each_area_loads_on_its_own_and_their_merge_is_the_code_location():
    """An area's Definitions carries every resource its jobs and sensors use; no item is in two areas."""
    from orchestration_defs.definitions import AREAS

    found: dict[str, list[str]] = {"jobs": [], "schedules": [], "sensors": []}
    for area in AREAS:
        repo = area().get_repository_def()
        found["jobs"] += [j.name for j in repo.get_all_jobs() if not j.name.startswith("__")]
        found["schedules"] += [s.name for s in repo.schedule_defs]
        found["sensors"] += [s.name for s in repo.sensor_defs]
    assert {kind: sorted(names) for kind, names in found.items()} == EXPECTED
