"""Release makespan with each executor, side by side: the shipped graph and the wide one with
3 s sandbox builds (bench/release.py's jobs and makespan), first with EXECUTOR=multiprocess (the fork
server executor, one machine), then with EXECUTOR=celery on two local Celery workers (dagster-celery's
own worker command, CELERY_WORKER_CONCURRENCY 4 each) over the throwaway RabbitMQ `make bench` starts.
Also the whole run (RUN_START to RUN_SUCCESS: start_release, package and publish included). Each
executor runs in a process of its own: the executor is chosen when the code loads.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from bench.common import emit, postgres_engine
from tests.servers import BIN, ROOT, Processes

BENCH = "executors"
WORKERS = 2


def _run_seconds(instance: dg.DagsterInstance, run_id: str) -> float:
    stats = instance.get_run_stats(run_id)
    return float((stats.end_time or 0) - (stats.start_time or 0))


def measure_one(executor: str) -> None:
    """In a process with EXECUTOR set: both graphs, one release each."""
    from bench.release import BUILD_S, makespan, measure
    from bench.release_jobs import shipped_job, wide_graph, wide_job
    from domain.release.release_graph import load_graph

    with dg.DagsterInstance.get() as instance:
        for label, job_fn, graph in (("shipped", shipped_job, load_graph()), ("wide", wide_job, wide_graph())):
            tag = f"bench-{executor}-{label}-{time.time_ns()}"
            if executor == "multiprocess":
                span, _ = measure(job_fn, graph, instance, tag)  # bench/release.py, its executor config
                run_id = instance.get_runs(limit=1)[0].run_id
            else:
                config = {"ops": {"start_release": {"config": {"tag": tag, "poll_initial_s": 0.2, "poll_max_s": 0.4}}}}
                result = dg.execute_job(dg.reconstructable(job_fn), instance=instance, run_config=config)
                assert result.success, "release run failed"
                run_id = result.run_id
                span = makespan(instance, run_id, graph)
            critical = graph.critical_path(dict.fromkeys(graph.order, BUILD_S))
            emit(BENCH, f"makespan_s.{label}.{executor}", span, "s", "-", critical_path_s=critical)
            emit(BENCH, f"run_s.{label}.{executor}", _run_seconds(instance, run_id), "s", "-")


def main() -> None:
    broker = os.environ.get("TEST_RABBITMQ_URL")
    if not broker:
        raise SystemExit("bench executors: TEST_RABBITMQ_URL is not set (make bench starts RabbitMQ)")
    import httpx

    from bench.release import BUILD_S
    from domain.core.settings import get_settings
    from orchestration_defs.executors import worker_command, write_worker_config

    engine = postgres_engine()
    servers = Processes()
    home = Path(tempfile.mkdtemp(prefix="wrk-bench-executors-"))
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)):  # its storage made once, before the processes open it
        pass
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "RELEASE_DIR": str(home / "releases"),
        "CELERY_BROKER_URL": broker,
        "CELERY_WORKER_CONCURRENCY": "4",
        "EXECUTOR": "celery",
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        sandbox_url = servers.uvicorn("resources.sandbox.app:create_app", env={"SMTP_PORT": "0"})
        env["GITHUB_API_URL"] = sandbox_url + "/github"
        httpx.post(sandbox_url + "/_sandbox/github/config", json={"default_duration_s": BUILD_S}).raise_for_status()
        os.environ.update(env)
        get_settings.cache_clear()  # importing bench.release built its jobs, reading the settings before this
        config = home / "celery-worker.yaml"
        write_worker_config(config)
        for number in range(1, WORKERS + 1):
            log = home / f"worker-{number}.log"
            with log.open("wb") as out:
                workers.append(
                    subprocess.Popen(
                        worker_command(config, name=f"bench-{number}"),
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for number in range(1, WORKERS + 1):  # the celery release waits in the queue until they are up
            while " ready." not in (home / f"worker-{number}.log").read_text():
                if workers[number - 1].poll() is not None:
                    raise SystemExit(f"bench executors: worker {number} exited; see {home}")
                time.sleep(0.2)
        for executor in ("multiprocess", "celery"):
            subprocess.run(
                [sys.executable, "-m", "bench.executors", executor],
                cwd=ROOT,
                env={**env, "EXECUTOR": executor},
                check=True,
            )
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        servers.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        measure_one(sys.argv[1])
    else:
        main()
