"""Where a job's steps run: on this machine (the job's own executor), or on Celery workers over RabbitMQ
(`EXECUTOR=celery`, dagster-celery) so that the steps of many runs spread over any number of machines.

Each kind of work has its own Celery queue (releases, workflows, phases): a worker consumes its queues
in turn, so a backlog of one kind never holds back the others, and a machine can be given to one kind
(`dagster-celery worker start -q releases`). The settings that make a step survive a worker that dies
mid-step go in through dagster-celery's own config (`config_source`, Celery's lowercase settings), the
same block for the run's executor and for the workers (`worker_config`):

- `task_acks_late`: a step's message is acknowledged when the step has finished, not when it starts;
  a worker that dies (SIGKILL, a lost machine) drops its connection, and the broker gives the step to
  another worker.
- `task_reject_on_worker_lost`: the same when only a worker's step process dies.
- `worker_prefetch_multiplier` 1: a busy worker holds no step it cannot start (it would wait behind the
  running one while another worker sits idle).

What a redelivered step must then be: safe to run twice. The release's repository steps are (a
repository whose build succeeded is never dispatched again: orchestration_defs/release.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from domain.core.settings import Settings, exit_when_misconfigured, get_settings

Kind = Literal["releases", "workflows", "phases"]
QUEUES: tuple[Kind, ...] = ("releases", "workflows", "phases")
BROKER_ENV = "CELERY_BROKER_URL"
FALLBACK_BROKER_ENV = "RABBITMQ_URL"

# Celery's own settings (https://docs.celeryq.dev/en/stable/userguide/configuration.html).
REDELIVERY = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}


def broker_env(settings: Settings | None = None) -> str:
    """The variable the broker URL is read from at run time: CELERY_BROKER_URL, else RABBITMQ_URL.
    By name, not value: the URL's password then never lands in the job's snapshot or the UI."""
    settings = settings or get_settings()
    if settings.celery_broker_url is not None:
        return BROKER_ENV
    if settings.rabbitmq_url is not None:
        return FALLBACK_BROKER_ENV
    raise ValueError(f"EXECUTOR=celery needs a broker: set {BROKER_ENV} (or {FALLBACK_BROKER_ENV})")


def celery_config(queue: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """dagster-celery's executor config: the broker (by variable), results over the same broker (rpc),
    the redelivery settings, and for a job, the queue its steps go to."""
    config_source: dict[str, Any] = dict(REDELIVERY)
    if queue is not None:
        config_source["task_default_queue"] = queue
    return {"broker": {"env": broker_env(settings)}, "backend": "rpc://", "config_source": config_source}


def worker_config(settings: Settings | None = None) -> dict[str, Any]:
    """The YAML `dagster-celery worker start -y` reads (its `execution: config:` block)."""
    return {"execution": {"config": celery_config(settings=settings)}}


def executor_for(kind: Kind, local: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """The executor of a job of this kind: `local` unless EXECUTOR=celery. Chosen when the code loads, so
    the code server, the run workers and the Celery workers must share EXECUTOR (`make run` does)."""
    settings = get_settings()
    if settings.executor != "celery":
        return local
    from dagster_celery import celery_executor  # only a celery deployment imports Celery

    return celery_executor.configured(celery_config(kind, settings), name=f"celery_{kind}")


def worker_command(config_path: Path, name: str | None = None, queues: tuple[str, ...] = QUEUES) -> list[str]:
    """dagster-celery's own worker command: it writes the config module the worker imports (from the
    `worker_config` YAML at `config_path`) and starts `celery worker` on `queues`, with
    CELERY_WORKER_CONCURRENCY step processes forked from it (Celery's prefork pool)."""
    # One `-q` with the queues comma-separated: dagster-celery turns each `-q` into a `-Q`, and Celery 5
    # keeps only the last `-Q` (a worker given three consumed one queue; the others' steps waited forever).
    argv = ["dagster-celery", "worker", "start", "-A", "dagster_celery.app", "-y", str(config_path)]
    argv += ["-q", ",".join(queues), "--loglevel", "INFO"]
    if name:
        argv += ["-n", name]
    concurrency = get_settings().celery_worker_concurrency
    # After `--`: Celery's own worker options. No gossip or mingle: workers need not know each other.
    return [*argv, "--", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle"]


def write_worker_config(path: Path) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(worker_config()))


if __name__ == "__main__":
    # `python -m orchestration_defs.executors CONFIG_PATH NAME`: writes the workers' config and prints the
    # command of worker NAME as JSON (scripts/supervise.py, which imports no Dagster).
    with exit_when_misconfigured("celery worker config"):
        write_worker_config(Path(sys.argv[1]))
        print(json.dumps(worker_command(Path(sys.argv[1]), name=sys.argv[2])))
