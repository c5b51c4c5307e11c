"""Run workers started from a warm process: Dagster's DefaultRunLauncher, but a run's worker is forked
from a fork server that has already imported Dagster and the instance's storage modules.

Why (bench/startup.py; figures in docs/performance.md): with the DefaultRunLauncher the code server
spawns each run worker as a new interpreter, which imports dagster, then the modules
`DagsterInstance.from_ref` needs, then our code location, before RUN_START: seconds per run. Forked
from a process that has done the first two, the worker starts in a fraction of a second.

How: `launch_run` (called in the daemon: every launch goes through the QueuedRunCoordinator) hands
the run to a `multiprocessing` fork server of this process, preloaded with wrk_instance.preload
(Dagster and third-party modules only, never the project's: a run imports the code on disk, as with
Dagster's own launcher). The forked worker runs Dagster's own `dagster api execute_run` body (the
command the DefaultRunLauncher's code server and Dagster's container launchers run), so events, logs,
tags, step execution and re-execution are Dagster's. The worker's pid and start time are run tags:
- `terminate` (the UI's "Terminate", run monitoring's cancel timeout) marks the run CANCELING and
  sends SIGINT, the interrupt the code server's termination thread sends, so the run ends CANCELED;
- `check_run_worker_health` (run monitoring) reports a worker that is gone as FAILED, so run monitoring
  fails the run and the queue's failure sensor retries its trigger.
A run launched by a previous launcher (no pid tag) is terminated the DefaultRunLauncher's way.

Workers outlive a daemon restart (the fork server exits when the daemon does; its children are not
killed), as they outlive the code server's. They belong to the daemon's process group, so `make run`'s
supervisor stops them with the daemon (scripts/supervise.py).

Dagster internals used (tests/wrk_instance/test_launcher.py fails if an upgrade changes them):
`dagster._cli.api.execute_run_command`, `dagster._grpc.types.ExecuteRunArgs`,
`DagsterRun.job_code_origin`, `HIDDEN_TAG_PREFIX` (tags the UI does not list).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import Array, DagsterRun, DefaultRunLauncher, Field, serialize_value
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.tags import HIDDEN_TAG_PREFIX
from dagster._serdes import ConfigurableClassData

# The worker's tags are the launcher's own bookkeeping: under Dagster's hidden prefix, the UI and GraphQL
# leave them out of a run's tags (the run list, the run page) while the launcher reads them as any tag.
PID_TAG = f"{HIDDEN_TAG_PREFIX}wrk/run_worker_pid"
# The worker's start time in clock ticks since boot (/proc/<pid>/stat): a pid reused by another process
# after the worker died is not mistaken for it.
STARTED_TAG = f"{HIDDEN_TAG_PREFIX}wrk/run_worker_started"
HOST_TAG = f"{HIDDEN_TAG_PREFIX}wrk/run_worker_host"
DEFAULT_PRELOAD = ("wrk_instance.preload", "wrk_instance.preload_code")
ROOT = Path(__file__).resolve().parents[1]
# Not the project's code or data: a change there does not change what a run imports or reads.
SKIP_DIRS = {".venv", ".git", "var", "tests", "bench", "scripts", "migrations", "node_modules", "__pycache__"}
COMPILED = (".pyc", ".pyo")


def code_stamp(root: Path = ROOT) -> tuple[int, int]:
    """(newest mtime, number) of the project's files, code and data alike (the release graph's YAML is
    read when the code location loads, as the modules are imported): changes when a file is edited,
    added or removed."""
    newest, count = 0, 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and not name.endswith(COMPILED):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
                    count += 1
    return newest, count


def _run_worker(serialized_args: str) -> None:
    """In the forked worker: Dagster's `dagster api execute_run`, in process."""
    from dagster._cli.api import execute_run_command

    execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)  # type: ignore[misc]


def process_start_ticks(pid: int) -> str | None:
    """A process's start time since boot (field 22 of /proc/<pid>/stat), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: no longer a worker
        return None
    return fields[19]


def set_sensor_loop_seconds(seconds: float | None) -> None:
    """The daemon's sensor loop looks for due sensors every MIN_INTERVAL_LOOP_TIME (5 s) whatever a
    sensor's minimum_interval_seconds, so a queue sensor at 1 s still ticks every 5 s, and a trigger waits
    up to 5 s before its run is requested. Dagster has no setting for it; the daemon loads this launcher
    from dagster.yaml at start-up, so it sets the constant the loop reads on every pass (a sensor still
    ticks no more often than its own minimum interval). tests/wrk_instance/test_launcher.py fails
    if an upgrade renames it or stops reading it."""
    if seconds is None:
        return
    import dagster._daemon.sensor as sensor_loop

    sensor_loop.MIN_INTERVAL_LOOP_TIME = seconds  # type: ignore[assignment]


class WarmRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers are forked from a warm fork server (module docstring)."""

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        preload_modules: Sequence[str] = (),
        sensor_loop_seconds: float | None = None,
    ) -> None:
        super().__init__(inst_data=inst_data)
        self._sensor_loop_s = sensor_loop_seconds
        self._preload = list(preload_modules or DEFAULT_PRELOAD)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._context: Any = None
        self._stamp: tuple[int, int] | None = None
        self.restarts = 0  # fork server restarts after a code change (tests)

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "preload_modules": Field(
                Array(str),
                is_required=False,
                description="Modules the fork server imports once (default: wrk_instance.preload).",
            ),
            "sensor_loop_seconds": Field(
                float,
                is_required=False,
                description="How often the daemon's sensor loop looks for due sensors (Dagster: 5 s).",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> WarmRunLauncher:
        return cls(
            inst_data=inst_data,
            preload_modules=config_value.get("preload_modules") or (),
            sensor_loop_seconds=config_value.get("sensor_loop_seconds"),
        )

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if os.path.basename(sys.argv[0]).startswith("dagster-daemon"):
            set_sensor_loop_seconds(self._sensor_loop_s)
            # The daemon launches every run: start the fork server now, not on the first launch (the
            # webserver, which only terminates runs, never starts one).
            threading.Thread(target=self.warm_up, name="warm-run-launcher", daemon=True).start()

    def _fork_context(self) -> Any:
        """The fork server's context; the server is restarted when the project's code or data changed
        since it imported it, so a run always runs the code on disk (as a new interpreter would)."""
        from multiprocessing import forkserver

        with self._lock:
            if self._context is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(self._preload)
                self._context = context
            stamp = code_stamp()
            if self._stamp is not None and stamp != self._stamp:
                forkserver._forkserver._stop()  # type: ignore[attr-defined]
                self.restarts += 1
            if self._stamp != stamp:
                self._stamp = stamp
            forkserver.ensure_running()  # started (and preloaded) once; a server that died is started again
            return self._context

    def warm_up(self) -> None:
        """Start the fork server and wait until it has imported its preload."""
        self._fork_context()

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._grpc.types import ExecuteRunArgs

        run = context.dagster_run
        if run.job_code_origin is None:  # not from a code location we can import: Dagster's way
            super().launch_run(context)
            return
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        fork = self._fork_context()
        with self._start_lock:
            process = fork.Process(target=_run_worker, args=(serialize_value(args),), name=f"run-{run.run_id}")
            process.start()
            # Not a child multiprocessing waits for or kills when this process exits: a daemon restart
            # leaves runs in flight running, as with the code server's workers.
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
        tags = {PID_TAG: str(process.pid), HOST_TAG: socket.gethostname()}
        started = process_start_ticks(process.pid)
        if started is not None:
            tags[STARTED_TAG] = started
        self._instance.add_run_tags(run.run_id, tags)

    # -- the worker, by its tags ----------------------------------------------------------------------

    def _worker_pid(self, run: DagsterRun) -> int | None:
        """The run's worker pid if it is alive on this host, None if gone; raises LookupError if unknown."""
        if PID_TAG not in run.tags:
            raise LookupError("no worker pid")
        if run.tags.get(HOST_TAG) != socket.gethostname():
            raise LookupError("worker on another host")
        pid = int(run.tags[PID_TAG])
        started = process_start_ticks(pid)
        if started is None or (STARTED_TAG in run.tags and run.tags[STARTED_TAG] != started):
            return None
        return pid

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        try:
            pid = self._worker_pid(run)
        except LookupError as why:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, str(why))
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker (pid {run.tags[PID_TAG]}) is gone")
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))

    def terminate(self, run_id: str) -> bool:
        if not self.has_instance:
            return False
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        try:
            pid = self._worker_pid(run)
        except LookupError:
            return bool(super().terminate(run_id))  # type: ignore[no-untyped-call]  # unannotated in Dagster
        self._instance.report_run_canceling(run)
        if pid is None:
            self._instance.report_engine_event("Run worker not found; nothing to interrupt.", run, cls=self.__class__)
            return False
        try:
            os.kill(pid, signal.SIGINT)  # what the code server's termination thread sends
        except ProcessLookupError:
            return False
        return True
