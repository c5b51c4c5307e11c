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

For a per-module import profile: `.venv/bin/python -X importtime -c 'import orchestration_defs.definitions'
2>&1 | sort -t'|' -k2 -n | tail -40`; for a live run worker: `py-spy dump --pid <pid>` (py-spy is a dev
dependency).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.common import emit

BENCH = "startup"
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
REPEAT = 5


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
        "from dagster._core.instance.ref import InstanceRef\n"
        "inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir(tempfile.mkdtemp()))\nmark('instance_from_ref')\n"
        "run = inst.create_run_for_job(dg.GraphDefinition('x', node_defs=[]).to_job())\nmark('first_run_write')\n"
        "inst.report_engine_event('first event', run)\nmark('first_event_write')\n"
        "from resources.database import DatabaseResource\n"
        "from resources.github import GitHubResource\nmark('import_resources')\n"
        "DatabaseResource().engine; GitHubResource()\nmark('resource_setup')"
    ),
}


def fresh(snippet: str) -> dict[str, float]:
    done = subprocess.run(
        [PYTHON, "-W", "ignore", "-c", _TIMED % snippet],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/x.db"},
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
    emit(BENCH, "interpreter_start_s", statistics.median(t := [interpreter_start() for _ in range(REPEAT)]), "s", "-",
         **spread(t))  # fmt: skip
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


if __name__ == "__main__":
    main()
