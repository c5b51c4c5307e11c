"""What a warm process imports once so that the processes forked from it start in well under a second.

Imported by the release job's forkserver (every step worker is forked from it) and by the warm run
launcher's fork server (wrk_instance/launcher.py: every run worker is forked from it): importing
Dagster and the ~500 modules `DagsterInstance.from_ref` needs (storage, alembic, the daemon's types) is
most of a fresh worker's start-up (bench/startup.py; figures in docs/performance.md).

Only Dagster's and third-party modules, never the project's: the fork server lives as long as the
process that started it, and a run must run the code on disk when it was launched (a code location
reloaded in the UI), so the worker imports the project's modules itself.

Nothing here opens a file, a connection or a thread: a process forked from this one inherits none.
"""

from __future__ import annotations

import contextlib
import importlib
import os

from wrk_instance.dagster_migrations import share_dagster_migrations

# Dagster: the API, the instance's storages (both backends), the run and step execution paths.
DAGSTER_MODULES = (
    "dagster",
    "dagster._core.instance.ref",
    "dagster._core.instance.factory",
    "dagster._core.instance.runs.run_domain",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.migration.utils",
    "dagster._core.definitions.external_asset",
    "dagster._core.system_config.composite_descent",
    "dagster._core.storage.sql",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.root",
    "dagster._core.storage.legacy_storage",  # dagster.yaml names its schedule storage on its own
    "dagster._core.run_coordinator",
    "dagster._core.launcher",
    "dagster._core.execution.api",
    "dagster._core.execution.run_cancellation_thread",
    "dagster._core.executor.multiprocess",
    "dagster._core.executor.child_process_executor",
    "dagster._cli.api",
    "dagster._grpc.types",
    "dagster_postgres",
)

# Third-party libraries the project's modules import at their top.
LIBRARY_MODULES = (
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "yaml",
    "tenacity",
    "upath.implementations.local",  # the compute log manager's paths
    "fsspec.implementations.local",
)


def instance_modules(home: str | None = None) -> list[str]:
    """The modules of the classes the instance's dagster.yaml names (a custom run coordinator, storage)."""
    home = home or os.environ.get("DAGSTER_HOME")
    if not home or not os.path.isfile(os.path.join(home, "dagster.yaml")):
        return []
    from dagster._core.instance.ref import InstanceRef

    with contextlib.suppress(Exception):  # a broken dagster.yaml is reported by Dagster, not here
        ref = InstanceRef.from_dir(home)
        datas = (
            ref.run_storage_data,
            ref.event_storage_data,
            ref.schedule_storage_data,
            ref.compute_logs_data,
            ref.run_coordinator_data,
            ref.run_launcher_data,
            ref.scheduler_data,
            ref.local_artifact_storage_data,
        )
        # Not the project's own modules (the run coordinator, the launcher): see the docstring.
        return [d.module_name for d in datas if d is not None and d.module_name.split(".")[0].startswith("dagster")]
    return []


def warm(home: str | None = None) -> list[str]:
    """Import everything above; returns the modules that could not be imported (an optional backend)."""
    missing = []
    for name in (*DAGSTER_MODULES, *LIBRARY_MODULES, *instance_modules(home)):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    share_dagster_migrations()
    return missing


warm()
