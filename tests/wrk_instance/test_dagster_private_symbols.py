"""Every private Dagster symbol the project uses, by name, and where it may be used.

wrk_instance/ (the single-machine instance's extensions) is the one package allowed to import Dagster's
private modules (`dagster._...`), and pyproject.toml pins Dagster exactly while it does. A Dagster
upgrade fails here first, naming the symbol that moved; a new private use anywhere fails the guard below
until it is moved into wrk_instance/ and named in PRIVATE_SYMBOLS."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "wrk_instance"
PRIVATE = re.compile(r"\bdagster\._[\w.]+")

# module -> the names imported from it, or the attributes read or replaced on it (empty: the module itself).
PRIVATE_SYMBOLS: dict[str, tuple[str, ...]] = {
    # launcher.py: the run worker is Dagster's `dagster api execute_run`, forked
    "dagster._cli.api": ("execute_run_command",),
    "dagster._grpc.types": ("ExecuteRunArgs",),
    "dagster._core.launcher": ("CheckRunHealthResult", "LaunchRunContext", "WorkerStatus"),
    "dagster._daemon.sensor": ("MIN_INTERVAL_LOOP_TIME",),
    "dagster._serdes": ("ConfigurableClassData",),
    # compute_logs.py: Dagster's local compute log manager without its console echo
    "dagster._core.execution.compute_logs": ("redirect_to_file",),
    "dagster._core.instance.ref": ("compute_logs_directory", "InstanceRef"),
    "dagster._core.storage.compute_log_manager": ("CapturedLogContext", "ComputeIOType"),
    "dagster._core.storage.local_compute_log_manager": ("IO_TYPE_EXTENSION", "LocalComputeLogManager"),
    "dagster._utils": ("ensure_file", "touch_file"),
    # schedule_storage.py: the methods the subclass overrides
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage": ("SqliteScheduleStorage",),
    "dagster._core.storage.schedules.sql_schedule_storage": ("SqlScheduleStorage",),
    # dagster_migrations.py: Dagster's own alembic scripts, recognised by their location
    "dagster._core.storage.runs.sqlite": ("sqlite_run_storage",),
    "dagster._core.storage.sql": ("ALEMBIC_SCRIPTS_LOCATION", "get_alembic_config"),
    # orchestration_defs/concurrency.py writes the run queue's priority tag by its value
    "dagster._core.storage.tags": ("PRIORITY_TAG",),
}
# Methods of Dagster classes the subclasses override, and the value the project writes as a literal.
OVERRIDDEN = {
    "SqliteScheduleStorage": ("connect", "_has_instigators_table", "has_secondary_index_table", "has_built_index"),
    "LocalComputeLogManager": ("capture_logs", "get_captured_local_path", "complete_artifact_path"),
}


def _private_imports(path: Path) -> set[str]:
    """The `dagster._...` modules a file imports (at any depth) or names as a string (a preload list)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dagster._"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dagster._"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and PRIVATE.fullmatch(node.value):
            found.add(node.value)
    return found


@pytest.mark.parametrize("module", sorted(PRIVATE_SYMBOLS))
def test_each_private_symbol_is_still_where_the_project_reads_it(module):
    imported = importlib.import_module(module)
    for name in PRIVATE_SYMBOLS[module]:
        assert hasattr(imported, name), f"{module}.{name} is gone: see docs/dagster-internals.md"


def test_the_methods_the_subclasses_override_are_still_dagsters():
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
    from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage

    for cls in (SqliteScheduleStorage, LocalComputeLogManager):
        for name in OVERRIDDEN[cls.__name__]:
            assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"


def test_the_priority_tag_the_run_coordinator_writes_is_dagsters():
    from dagster._core.storage.tags import PRIORITY_TAG

    from orchestration_defs.concurrency import PRIORITY_TAG as WRITTEN

    assert WRITTEN == PRIORITY_TAG


def test_every_private_import_of_the_package_is_named_here():
    """A private module wrk_instance/ starts to import must be added above (the preload's import list
    aside: it only warms modules, a missing one is reported by preload.warm())."""
    imported = set().union(*(_private_imports(p) for p in PACKAGE.glob("*.py") if p.name != "preload.py"))
    assert imported <= set(PRIVATE_SYMBOLS), sorted(imported - set(PRIVATE_SYMBOLS))


def test_no_private_dagster_import_outside_wrk_instance():
    """The project's code, scripts and benchmarks import no `dagster._` module outside wrk_instance/.
    tests/ is left out: it drives Dagster through its test utilities (dagster._core.test_utils)."""
    skip = {".venv", ".git", "var", "tests", "wrk_instance", "node_modules", "__pycache__"}
    offenders = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if skip.isdisjoint(parts) and not any(p.startswith(".") or p.endswith(".egg-info") for p in parts):
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in sorted(_private_imports(path))]
    scripts = [p for p in (ROOT / "scripts").iterdir() if p.is_file() and p.suffix != ".py"]
    for path in [*scripts, ROOT / "Makefile", *ROOT.glob("*.yaml"), *(ROOT / "deploy").rglob("*.yaml")]:
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in PRIVATE.findall(path.read_text())]
    assert offenders == []


def test_the_code_location_names_no_wrk_instance_module():
    """Not even as a string for a process it starts (a fork server's or a Celery worker's preload): the
    extensions are the single-machine instance configuration's, named by dagster.yaml only."""
    packages = ("orchestration_defs", "sensors", "schedules", "resources", "domain")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in packages
        for path in (ROOT / package).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "wrk_instance" in line
    ]
    assert offenders == []


def test_importing_the_code_location_patches_nothing_and_loads_no_wrk_instance_module():
    """The code location is Dagster's plain user code: what the daemon, a run pod or a code server imports
    from it leaves Dagster and alembic as they are (the extensions come from the instance config)."""
    script = """
import sys
import dagster._daemon.sensor as sensor_loop
from alembic.script import ScriptDirectory
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
names = ("connect", "_has_instigators_table", "has_secondary_index_table", "has_built_index")
before = (sensor_loop.MIN_INTERVAL_LOOP_TIME, ScriptDirectory.__dict__["from_config"],
          [SqliteScheduleStorage.__dict__.get(n) for n in names])
import orchestration_defs.definitions
after = (sensor_loop.MIN_INTERVAL_LOOP_TIME, ScriptDirectory.__dict__["from_config"],
         [SqliteScheduleStorage.__dict__.get(n) for n in names])
assert before == after, (before, after)
assert not [m for m in sys.modules if m.startswith("wrk_instance")], sorted(sys.modules)
"""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
