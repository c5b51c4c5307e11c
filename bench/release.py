"""Release benchmark: sandbox builds of a fixed duration (3 s) on the shipped graph and on a wide
16-repository, 4-level graph, through the release_build job and its multiprocess executor.
Makespan: first repository step start to last repository step success. The wide graph runs twice: its
first release (no build history), then the measured one (each repository built once before, as in
production)."""

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import yaml

from bench.common import emit, postgres_engine
from bench.release_jobs import shipped_job, wide_graph, wide_job
from bench.startup import spread, step_parts
from domain.release.release_graph import ReleaseGraph, load_graph
from tests.servers import Processes

BENCH = "release"
BUILD_S = 3.0
# The fork server preloads the jobs' module, as the shipped job's preloads the code location
# (bench.release_jobs: a module, not __main__, so the workers find its jobs built). BENCH_RELEASE_PRELOAD:
# another list, for a before/after (docs/dagster-internals.md).
PRELOAD = os.environ.get("BENCH_RELEASE_PRELOAD", "bench.release_jobs").split(",")


def measure(
    job_fn: Callable[[], dg.JobDefinition], graph: ReleaseGraph, instance: dg.DagsterInstance, tag: str
) -> tuple[float, dict[str, list[float]]]:
    run_config = {
        "ops": {"start_release": {"config": {"tag": tag, "poll_initial_s": 0.2, "poll_max_s": 0.4}}},
        "execution": {"config": {"max_concurrent": 8, "start_method": {"forkserver": {"preload_modules": PRELOAD}}}},
    }
    result = dg.execute_job(dg.reconstructable(job_fn), instance=instance, run_config=run_config)
    assert result.success, "release run failed"
    return makespan(instance, result.run_id, graph), step_parts(instance, result.run_id)


def makespan(instance: dg.DagsterInstance, run_id: str, graph: ReleaseGraph) -> float:
    """First repository step start to last repository step success (also bench/executors.py)."""
    names = {"build_" + n.replace("-", "_") for n in graph.repositories}
    starts, ends = [], []
    for record in instance.get_records_for_run(run_id, limit=100_000).records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key not in names:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts.append(record.timestamp)
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends.append(record.timestamp)
    return max(ends) - min(starts)


def main() -> None:
    engine = postgres_engine()
    servers = Processes()
    sandbox_url = servers.uvicorn("resources.sandbox.app:create_app", env={"SMTP_PORT": "0"})
    os.environ.update(
        {
            "DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "GITHUB_API_URL": sandbox_url + "/github",
            "RELEASE_DIR": tempfile.mkdtemp(prefix="wrk-bench-release-"),
        }
    )
    import httpx

    httpx.post(sandbox_url + "/_sandbox/github/config", json={"default_duration_s": BUILD_S}).raise_for_status()
    home = Path(tempfile.mkdtemp(prefix="wrk-bench-dagster-"))
    try:
        # The shipped instance's compute log manager (dagster.yaml), as make run's release runs use.
        shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
        with dg.instance_for_test(temp_dir=str(home), overrides={"compute_logs": shipped["compute_logs"]}) as instance:
            worker_start: list[float] = []
            parts: dict[str, list[float]] = {}
            only = os.environ.get("BENCH_RELEASE_GRAPHS")  # "shipped" or "wide" (scripts/profile-startup)
            # The shipped graph once, as a first release (no build history: the op polls with its backoff);
            # the wide graph twice: its first release (reported), then the measured one, whose repositories
            # have a build behind them, as they do in production (the op looks closely around the time a
            # repository's builds usually end: domain/release/release.py poll_wait).
            runs = (
                ("shipped", shipped_job, load_graph()),
                ("wide_first_release", wide_job, wide_graph()),
                ("wide", wide_job, wide_graph()),
            )
            for label, job_fn, graph in runs:
                if only and label.split("_")[0] not in only.split(","):
                    continue
                span, steps = measure(job_fn, graph, instance, f"bench-{label}-{time.time_ns()}")
                worker_start += steps["worker_start_s"]
                for part, values in steps.items():
                    parts.setdefault(part, []).extend(values)
                critical = graph.critical_path(dict.fromkeys(graph.order, BUILD_S))
                emit(
                    BENCH,
                    f"makespan_over_critical_path.{label}",
                    span / critical,
                    "ratio",
                    "<= 1.3" if label == "wide" else "-",
                    makespan_s=round(span, 2),
                    critical_path_s=critical,
                )
                if label == "wide":
                    emit(BENCH, "makespan_s.wide", span, "s", "-")
                    emit(BENCH, "critical_path_s.wide", critical, "s", "-")
                    emit(BENCH, "sequential_s.wide", BUILD_S * len(graph.order), "s", "-")
            # A step's worker starting -> started, over every step of both runs (bench/startup.py, the parts).
            emit(
                BENCH,
                "step_start_p50_s",
                statistics.median(worker_start),
                "s",
                "<= 1.0",
                **{part: spread(values) for part, values in parts.items()},
            )
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
