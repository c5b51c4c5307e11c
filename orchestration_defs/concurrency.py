"""One release per tag at a time, one build per automation version at a time, however a run is launched
(the queue sensor, the Dagster UI, GraphQL, a re-execution): Dagster's own tag concurrency limits do the
waiting (`tag_concurrency_limits` with `applyLimitPerUniqueValue` in dagster.yaml and
dagster.postgres.yaml), and this run coordinator makes sure each run carries the tag they count.

A job's tags are static, and a tag an op adds while running comes too late for the queue, so the tag
is derived here from the run's own config when the run is submitted, before it is queued: every launch
path goes through the instance's run coordinator. Importable without the code location (the daemon and
the webserver load it from the instance config): it reads plain run config, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import DagsterRun, DagsterRunStatus
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

TAG_RELEASE = "wrk/release_tag"
TAG_VERSION = "wrk/automation_version_id"

# job name -> (the tag Dagster counts, where its value is in the run config). By job name, the one thing
# every run record has: a run made outside the UI's path need not carry the job's static tags.
CONCURRENCY_TAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "release_build": (TAG_RELEASE, ("ops", "start_release", "config", "tag")),
    "build_automation_version": (TAG_VERSION, ("ops", "load", "config", "automation_version_id")),
}


def concurrency_tags(job_name: str, run_config: Mapping[str, Any]) -> dict[str, str]:
    """The tag a run of this job must carry for the concurrency limits, from its run config ({} when the
    job is not limited or its config lacks the value: Dagster then rejects the config anyway)."""
    spec = CONCURRENCY_TAGS.get(job_name)
    if spec is None:
        return {}
    key, path = spec
    value: Any = run_config
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return {key: str(value)} if isinstance(value, str) and value else {}


class FlowRunCoordinator(QueuedRunCoordinator):
    """The QueuedRunCoordinator, tagging each run for the flows' concurrency limits before it is queued."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        missing = {k: v for k, v in concurrency_tags(run.job_name, run.run_config).items() if run.tags.get(k) != v}
        if missing and run.status == DagsterRunStatus.NOT_STARTED:
            self._instance.add_run_tags(run.run_id, missing)
            tagged = self._instance.get_run_by_id(run.run_id)
            if tagged is not None:
                context = context._replace(dagster_run=tagged)
        return super().submit_run(context)
