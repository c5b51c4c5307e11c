"""Start-up breakdown: where a run's and a step's start-up time goes, in parts.

Two sources, so that each figure can be checked against the other:

- Dagster's own event timestamps of a finished run (`run_parts`, `step_parts`; the release and queue
  benches print them next to their metrics):
  run:  RUN_STARTING (launcher) -> "Started process for run" (worker up: process start, imports,
        instance from its ref) -> RUN_START (code location load, execution plan).
  step: STEP_WORKER_STARTING (executor) -> STEP_WORKER_STARTED (process start, instance from its ref,
        first event write) -> STEP_START (code location load, execution plan, resource set-up).
- Fresh processes timed from outside (`main`, `make bench BENCH=startup`): interpreter start, `import
  dagster`, our modules on a step's path, the whole code location, instance from its ref, resource
  set-up, first event write. Each is repeated (the machine is shared) and printed with its spread.
- Each piece of wrk_instance/ with and without it (`piece.*`; docs/dagster-internals.md), ending with
  build triggers through a real daemon with the shipped dagster.yaml and with Dagster's own run launcher
  and sensor loop (BENCH_SKIP_DAEMON=1 leaves that out).

For a per-module import profile: `.venv/bin/python -X importtime -c 'import orchestration_defs.definitions'
2>&1 | sort -t'|' -k2 -n | tail -40`; for a live run worker: `py-spy dump --pid <pid>` (py-spy is a dev
dependency).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.common import emit, sqlite_engine

BENCH = "startup"
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REPEAT = 5
DAEMON_SAMPLES = 12


def _by_type(instance: Any, run_id: str) -> list[Any]:
    return list(instance.get_records_for_run(run_id, limit=100_000).records)


def run_parts(instance: Any, run_id: str) -> dict[str, float]:
    """Seconds from the launch to the run worker's first event, and from there to RUN_START."""
    import dagster as dg

    starting = process = started = None
    for record in _by_type(instance, run_id):
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_STARTING and starting is None:
            starting = record.timestamp
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and process is None:
            if (event.message or "").startswith("Started process for run"):
                process = record.timestamp
        elif event.event_type == dg.DagsterEventType.RUN_START and started is None:
            started = record.timestamp
    parts: dict[str, float] = {}
    if starting is not None and process is not None:
        parts["launch_to_worker_up_s"] = process - starting
    if process is not None and started is not None:
        parts["worker_up_to_run_start_s"] = started - process
    if starting is not None and started is not None:
        parts["launch_to_run_start_s"] = started - starting
    return parts


def step_parts(instance: Any, run_id: str, steps: Iterable[str] | None = None) -> dict[str, list[float]]:
    """Per step: worker starting -> started (process start, instance from ref, first event write) and
    worker started -> STEP_START (code location load, plan, resource set-up)."""
    import dagster as dg

    wanted = set(steps) if steps is not None else None
    marks: dict[str, dict[str, float]] = {}
    kinds = {
        dg.DagsterEventType.STEP_WORKER_STARTING: "starting",
        dg.DagsterEventType.STEP_WORKER_STARTED: "started",
        dg.DagsterEventType.RESOURCE_INIT_STARTED: "resources_from",
        dg.DagsterEventType.RESOURCE_INIT_SUCCESS: "resources_to",
        dg.DagsterEventType.STEP_START: "step_start",
    }
    for record in _by_type(instance, run_id):
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None or event.event_type not in kinds:
            continue
        if wanted is not None and event.step_key not in wanted:
            continue
        marks.setdefault(event.step_key, {}).setdefault(kinds[event.event_type], record.timestamp)
    out: dict[str, list[float]] = {"worker_start_s": [], "started_to_step_start_s": [], "resource_init_s": []}
    for m in marks.values():
        if "starting" in m and "started" in m:
            out["worker_start_s"].append(m["started"] - m["starting"])
        if "started" in m and "step_start" in m:
            out["started_to_step_start_s"].append(m["step_start"] - m["started"])
        if "resources_from" in m and "resources_to" in m:
            out["resource_init_s"].append(m["resources_to"] - m["resources_from"])
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


# -- fresh processes ---------------------------------------------------------------------------------

_TIMED = """
import json, sys, time
t0 = time.perf_counter()
marks = {}
def mark(name):
    marks[name] = time.perf_counter() - t0
%s
print(json.dumps(marks))
"""

PARTS: dict[str, str] = {
    # Each snippet runs in a new interpreter; marks are cumulative from the snippet's start.
    "import_dagster": "import dagster\nmark('import_dagster')",
    "step_path": (
        "import dagster\nmark('import_dagster')\nimport orchestration_defs.release\nmark('import_release_module')"
    ),
    "code_location": (
        "import dagster\nmark('import_dagster')\n"
        "import orchestration_defs.definitions as d\nmark('import_code_location')\n"
        "d.defs.get_repository_def()\nmark('resolve_repository')"
    ),
    "instance_and_resources": (
        "import dagster as dg, tempfile\nmark('import_dagster')\n"
        "inst = dg.DagsterInstance.from_config(tempfile.mkdtemp())\nmark('instance_from_ref')\n"
        "run = inst.create_run_for_job(dg.GraphDefinition('x', node_defs=[]).to_job())\nmark('first_run_write')\n"
        "inst.report_engine_event('first event', run)\nmark('first_event_write')\n"
        "from resources.dagster_resources import DatabaseResource, GitHubResource\nmark('import_resources')\n"
        "DatabaseResource().engine\n"
        "with dg.build_resources({'github': GitHubResource()}) as r: r.github.client\nmark('resource_setup')"
    ),
}


# What each piece of wrk_instance/ (the single-machine instance's extensions) buys, with and without it,
# in one process each (docs/dagster-internals.md). `HOME` is a new DAGSTER_HOME holding `YAML`.
_HOME = (
    "import os, tempfile, yaml\n"
    "def home(config):\n"
    "    path = tempfile.mkdtemp()\n"
    "    open(os.path.join(path, 'dagster.yaml'), 'w').write(yaml.safe_dump(config))\n"
    "    return path\n"
    "SHIPPED = yaml.safe_load(open('dagster.yaml'))\n"
    "PIECE = {k: SHIPPED[k] for k in ('schedule_storage', 'compute_logs')}\n"
)
# A run worker up to its first event with the code location loaded: what the DefaultRunLauncher's new
# interpreter does before RUN_START, against a worker forked from the warm launcher's preloaded process.
_WORKER = (
    "import dagster as dg\n"
    "import orchestration_defs.definitions\n"
    "inst = dg.DagsterInstance.get()\n"
    "run = inst.create_run_for_job(dg.GraphDefinition('x', node_defs=[]).to_job())\n"
    "inst.report_engine_event('first', run)\n"
)
PIECES: dict[str, str] = {
    "warm_launcher": (
        _HOME + "import subprocess, sys\n"
        "os.environ['DAGSTER_HOME'] = home(SHIPPED)\n"
        f"W = {_WORKER!r}\n"
        "worker = [sys.executable, '-W', 'ignore', '-c', W]\n"
        "subprocess.run(worker, check=True)\nmark('first_worker_makes_storage')\n"
        "subprocess.run(worker, check=True)\nmark('without.new_interpreter_worker')\n"
        "import wrk_instance.preload, wrk_instance.preload_code\nmark('with.preload_once')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    exec(W)\n"
        "    os._exit(0)\n"
        "assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0\nmark('with.forked_worker')"
    ),
    # Five instances opened from their ref, as the code server does for each sensor tick.
    "shared_migrations": (
        "import dagster as dg, tempfile\nroot = tempfile.mkdtemp()\n"
        "dg.DagsterInstance.from_config(root)\nmark('first_instance_makes_storage')\n"
        "for _ in range(5):\n    dg.DagsterInstance.from_config(root)\nmark('without.five_instances')\n"
        "from wrk_instance.dagster_migrations import share_dagster_migrations\n"
        "share_dagster_migrations()\nmark('with.parse_once')\n"
        "for _ in range(5):\n    dg.DagsterInstance.from_config(root)\nmark('with.five_instances')"
    ),
    # 200 rounds of a sensor tick's schedule-storage questions (instigator states, its last tick).
    "kept_schedule_schema": (
        _HOME + "import dagster as dg\n"
        "def ticks(config, variant):\n"
        "    inst = dg.DagsterInstance.from_config(home(config))\n"
        "    mark(variant + '.open')\n"
        "    for _ in range(200):\n"
        "        inst.all_instigator_state()\n"
        "        inst.get_ticks('origin', 'selector', limit=1)\n"
        "    return inst\n"
        "ticks({}, 'without')\nmark('without.200_ticks')\n"
        "ticks({'schedule_storage': PIECE['schedule_storage']}, 'with')\nmark('with.200_ticks')"
    ),
    # Ten one-op runs in process: each step's output captured by Dagster's default manager or ours.
    "step_log_files": (
        _HOME + "import dagster as dg\n"
        "job = dg.GraphDefinition('x', node_defs=[dg.op(name='o')(lambda: print('out'))]).to_job()\n"
        "def runs(config, variant):\n"
        "    inst = dg.DagsterInstance.from_config(home(config))\n"
        "    job.execute_in_process(instance=inst)\n"
        "    mark(variant + '.first_run')\n"
        "    for _ in range(10):\n"
        "        assert job.execute_in_process(instance=inst).success\n"
        "runs({}, 'without')\nmark('without.ten_runs')\n"
        "runs({'compute_logs': PIECE['compute_logs']}, 'with')\nmark('with.ten_runs')"
    ),
}


@functools.cache
def store_url() -> str:
    """A migrated SQLite store for the snippets: the database resource refuses one not migrated."""
    return sqlite_engine().url.render_as_string(hide_password=False)


def fresh(snippet: str) -> dict[str, float]:
    done = subprocess.run(
        [PYTHON, "-W", "ignore", "-c", _TIMED % snippet],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": store_url()},
        check=True,
    )
    marks: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return marks


def interpreter_start() -> float:
    import time

    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main() -> None:
    starts = [interpreter_start() for _ in range(REPEAT)]
    emit(BENCH, "interpreter_start_s", statistics.median(starts), "s", "-", **spread(starts))
    for name, snippet in PARTS.items():
        runs = [fresh(snippet) for _ in range(REPEAT)]
        for mark in runs[0]:
            # Each mark as its own part (this mark minus the one before), median over the repeats.
            values = []
            for marks in runs:
                keys = list(marks)
                i = keys.index(mark)
                values.append(marks[mark] - (marks[keys[i - 1]] if i else 0.0))
            emit(BENCH, f"{name}.{mark}_s", statistics.median(values), "s", "-", **spread(values))
    pieces()


def pieces() -> None:
    """Each wrk_instance/ piece with and without it (PIECES), then the sensor loop and the warm launcher
    end to end: a build trigger committed -> run launched -> RUN_START through a real daemon and code
    server (bench/queue.py), with the shipped dagster.yaml and with Dagster's own launcher and loop."""
    for name, snippet in PIECES.items():
        runs = [fresh(snippet) for _ in range(REPEAT)]
        for mark in runs[0]:
            values = []
            for marks in runs:
                keys = list(marks)
                i = keys.index(mark)
                values.append(marks[mark] - (marks[keys[i - 1]] if i else 0.0))
            emit(BENCH, f"piece.{name}.{mark}_s", statistics.median(values), "s", "-", **spread(values))
    if os.environ.get("BENCH_SKIP_DAEMON") == "1":
        return
    from bench.queue import trigger_to_run_start

    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    dagster_defaults = {k: v for k, v in shipped.items() if k != "run_launcher"}
    for variant, config in (("with", shipped), ("without", dagster_defaults)):
        path = Path(tempfile.mkdtemp()) / "dagster.yaml"
        path.write_text(yaml.safe_dump(config))
        os.environ["BENCH_DAGSTER_YAML"] = str(path)
        waits, launches, parts = trigger_to_run_start(samples=DAEMON_SAMPLES)
        starts = parts.get("launch_to_run_start_s", [])
        emit(BENCH, f"piece.sensor_loop.{variant}.committed_to_launched_s", statistics.median(launches), "s", "-",
             **spread(launches))  # fmt: skip
        start = statistics.median(starts or [float("nan")])
        emit(BENCH, f"piece.warm_launcher.{variant}.launched_to_run_start_s", start, "s", "-", **spread(starts))
        emit(BENCH, f"piece.both.{variant}.committed_to_run_start_s", statistics.median(waits), "s", "-",
             **spread(waits))  # fmt: skip


if __name__ == "__main__":
    main()
