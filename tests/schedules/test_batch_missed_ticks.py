"""What happens to batch-job ticks missed while the daemon was down, through Dagster's own scheduler
loop (the code the daemon runs) against the real code location. Dagster 1.13 catches up a schedule only
when it has a partition *set*; schedules built from partitioned *asset* jobs have none ("has no partition
set, so not trying to catch up"), so only the latest missed tick gets its run and the earlier missed
periods stay missing until someone backfills them (docs/batch-jobs.md: the runbook)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._scheduler.scheduler import launch_scheduled_runs

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = "risk_snapshot_backfill_schedule"  # daily at 02:00 UTC by default


def _tick(context, now: datetime) -> None:
    with freeze_time(now):
        list(launch_scheduled_runs(context, logging.getLogger("scheduler"), now, {}))


def test_ticks_missed_while_the_daemon_was_down_run_only_the_latest_period(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCH_START", "2026-01-01")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'wrk.db'}")
    overrides = {"run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}
    target = ModuleTarget(
        module_name="orchestration_defs.definitions",
        attribute=None,
        working_directory=str(ROOT),
        location_name="wrk",
    )
    with (
        dg.instance_for_test(overrides=overrides) as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        # The daemon runs on 2026-03-01 at 01:00 (the schedule is RUNNING by default: it starts counting now)
        down_at = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
        _tick(context, down_at)
        assert not instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
        # ... and comes back ten days later: ten daily ticks (03-01 .. 03-10 at 02:00) were missed.
        _tick(context, down_at + timedelta(days=10))
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
        keys = sorted(run.tags["dagster/partition"] for run in runs)
    # Only the period closed by the latest missed tick (03-10 02:00) runs; the nine periods closed by the
    # other missed ticks (02-28 .. 03-08) get no run: they need a backfill.
    assert keys == ["2026-03-09-02:00"]
