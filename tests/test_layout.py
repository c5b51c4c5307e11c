"""The layout by kind: sensors are made only in sensors/, schedules only in schedules/, jobs, ops and
assets only in orchestration_defs/; orchestration_defs/ imports neither sensors/ nor schedules/ (only its
definitions.py, which merges the areas); the dialect is tested in one place."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("domain", "resources", "orchestration_defs", "sensors", "schedules", "api")

SENSOR_MAKERS = {"sensor", "run_status_sensor", "run_failure_sensor", "asset_sensor", "multi_asset_sensor"}
SCHEDULE_MAKERS = {"schedule", "ScheduleDefinition", "build_schedule_from_partitioned_job"}
JOB_MAKERS = {"job", "op", "asset", "multi_asset", "graph", "define_asset_job"}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def _dagster_calls(path: Path) -> set[str]:
    """The `dg.<name>` (or `dagster.<name>`) a module names: its decorators and calls among them."""
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("dg", "dagster")
    }


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def _where(makers: set[str]) -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in _modules(package)
        if _dagster_calls(path) & makers
    }


def test_sensors_are_made_only_in_sensors():
    assert {m for m in _where(SENSOR_MAKERS) if not m.startswith("sensors/")} == set()


def test_schedules_are_made_only_in_schedules():
    assert {m for m in _where(SCHEDULE_MAKERS) if not m.startswith("schedules/")} == set()


def test_jobs_ops_and_assets_are_made_only_in_orchestration_defs():
    assert {m for m in _where(JOB_MAKERS) if not m.startswith("orchestration_defs/")} == set()


def test_orchestration_defs_imports_no_sensor_or_schedule_module_but_its_definitions():
    importing = {
        str(path.relative_to(ROOT))
        for path in _modules("orchestration_defs")
        if _imported_packages(path) & {"sensors", "schedules"}
    }
    assert importing == {"orchestration_defs/definitions.py"}


def test_the_dialect_is_tested_only_by_the_store():
    testing = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in _modules(package)
        if "dialect.name" in path.read_text()
    }
    assert testing == {"domain/core/store.py"}
