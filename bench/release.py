"""Release benchmark: sandbox builds of a fixed duration (3 s) on the shipped graph and on a wide
16-repository, 4-level graph, through the release_build job and its multiprocess executor.
Makespan: first repository step start to last repository step success."""

import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg

from bench.common import emit, postgres_engine
from bench.startup import spread, step_parts
from domain.release_graph import ReleaseGraph, Repository, build_graph, load_graph
from tests.servers import Processes

BENCH = "release"
BUILD_S = 3.0
# Imported once in the fork server, so each step process starts without importing them again.
PRELOAD = os.environ.get(  # BENCH_RELEASE_PRELOAD: another list, for a before/after ("dagster,..." was main's)
    "BENCH_RELEASE_PRELOAD", "orchestration_defs.preload,orchestration_defs.release,bench.release"
).split(",")


def wide_graph() -> ReleaseGraph:
    repos = {}
    for level in range(4):
        for i in range(4):
            deps = () if level == 0 else (f"r{level - 1}{i}", f"r{level - 1}{(i + 1) % 4}")
            repos[f"r{level}{i}"] = Repository(
                name=f"r{level}{i}", owner="bench", workflow="build.yml", depends_on=deps
            )
    graph = build_graph(repos)
    return ReleaseGraph(graph.repositories, graph.groups, "bench/release")


def _bound(graph: ReleaseGraph, name: str) -> dg.JobDefinition:
    from orchestration_defs.release import build_release_job
    from resources.database import DatabaseResource
    from resources.github import GitHubResource

    defs = dg.Definitions(
        jobs=[build_release_job(graph, name)], resources={"database": DatabaseResource(), "github": GitHubResource()}
    )
    return defs.get_job_def(name)


def shipped_job() -> dg.JobDefinition:
    return _bound(load_graph(), "release_build")


def wide_job() -> dg.JobDefinition:
    return _bound(wide_graph(), "release_build_wide")


def measure(
    job_fn, graph: ReleaseGraph, instance: dg.DagsterInstance, tag: str
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
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            worker_start: list[float] = []
            parts: dict[str, list[float]] = {}
            only = os.environ.get("BENCH_RELEASE_GRAPHS")  # "shipped" or "wide" (scripts/profile-startup)
            for label, job_fn, graph in (("shipped", shipped_job, load_graph()), ("wide", wide_job, wide_graph())):
                if only and label not in only.split(","):
                    continue
                makespan, steps = measure(job_fn, graph, instance, f"bench-{label}-{time.time_ns()}")
                worker_start += steps["worker_start_s"]
                for part, values in steps.items():
                    parts.setdefault(part, []).extend(values)
                critical = graph.critical_path(dict.fromkeys(graph.order, BUILD_S))
                emit(
                    BENCH,
                    f"makespan_over_critical_path.{label}",
                    makespan / critical,
                    "ratio",
                    "<= 1.3",
                    makespan_s=round(makespan, 2),
                    critical_path_s=critical,
                )
                if label == "wide":
                    emit(BENCH, "makespan_s.wide", makespan, "s", "-")
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
