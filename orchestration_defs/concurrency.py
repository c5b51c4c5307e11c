"""Run limits, however a run is launched (a queue sensor, the Dagster UI, GraphQL, a re-execution):
Dagster's own tag concurrency limits do the waiting (`tag_concurrency_limits` in dagster.yaml,
dagster.postgres.yaml and deploy/helm/values.yaml), and this run coordinator makes sure each run carries
the tags they count:

- `wrk/release_tag`, `wrk/automation_version_id`: one release per tag, one build per version at a time;
- `wrk/tenant_id`: at most TENANT_MAX_CONCURRENT_RUNS runs of one tenant at a time (a per-unique-value
  limit this coordinator adds itself: Dagster's `limit` is a plain int, not an environment variable), so
  one tenant's burst waits in the queue while another tenant's run starts;
- `wrk/flow`: the kind of work (release, build, workflow, phase, batch, housekeeping), each kind with its
  own limit below the instance's max_concurrent_runs, so one kind cannot take every slot.

A job's tags are static, and a tag an op adds while running comes too late for the queue, so the tags are
derived here when the run is submitted, before it is queued: every launch path goes through the
instance's run coordinator. The tenant comes from the run config (the queue sensors put the trigger's
tenant there); a UI launch that names no tenant is looked up in the store by the version or execution it
names. Runs of no tenant (releases are platform-wide, batch jobs, sweepers; a phase batch of several
tenants' triggers) carry no `wrk/tenant_id` and count only against their kind. Importable without the code
location (the daemon and the webserver load it from the instance config): it reads the run config, the
settings and, for that lookup only, the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, cast

from dagster import DagsterRun, DagsterRunStatus, Field, IntSource, QueuedRunCoordinator, SubmitRunContext

from orchestration_defs.tags import TAG_FLOW, TAG_TENANT

TAG_RELEASE = "wrk/release_tag"
TAG_VERSION = "wrk/automation_version_id"

logger = logging.getLogger(__name__)

# job name -> (the tag Dagster counts, where its value is in the run config). By job name, the one thing
# every run record has: a run made outside the UI's path need not carry the job's static tags.
CONCURRENCY_TAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "release_build": (TAG_RELEASE, ("ops", "start_release", "config", "tag")),
    "build_automation_version": (TAG_VERSION, ("ops", "load", "config", "automation_version_id")),
}

# job name -> its kind of work (wrk/flow); batch-job asset jobs are "batch", every other job "housekeeping".
FLOWS = {
    "release_build": "release",
    "build_automation_version": "build",
    "workflow_execution": "workflow",
    "phase_worker": "phase",
}
HOUSEKEEPING = "housekeeping"
PRIORITY_TAG = "dagster/priority"  # the run queue's order (Dagster reads it; no public constant)
HOUSEKEEPING_PRIORITY = "1"  # above the default 0 of every other run

# job name -> where the tenant is in its run config (the queue sensors always set it; a hint the store
# checks, and the right value to count: a build or execution of another tenant is refused by the run).
TENANT_IN_CONFIG: dict[str, tuple[str, ...]] = {
    "build_automation_version": ("ops", "load", "config", "tenant_id"),
    "workflow_execution": ("ops", "run_workflow_execution", "config", "tenant_id"),
}
# job name -> (the config path of the row it names, the store model holding that row's tenant): for UI
# launches that name no tenant.
TENANT_IN_STORE: dict[str, tuple[tuple[str, ...], str]] = {
    "build_automation_version": (("ops", "load", "config", "automation_version_id"), "AutomationVersion"),
    "workflow_execution": (("ops", "run_workflow_execution", "config", "workflow_execution_id"), "WorkflowExecution"),
}


def _walk(run_config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = run_config
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _at(run_config: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    value = _walk(run_config, path)
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def concurrency_tags(job_name: str, run_config: Mapping[str, Any]) -> dict[str, str]:
    """The tag a run of this job must carry for the one-at-a-time limits, from its run config ({} when the
    job is not limited or its config lacks the value: Dagster then rejects the config anyway)."""
    spec = CONCURRENCY_TAGS.get(job_name)
    if spec is None:
        return {}
    key, path = spec
    value = _at(run_config, path)
    return {key: value} if value else {}


def flow_of(job_name: str, asset_names: Iterable[str] = ()) -> str:
    """The kind of work a job does (the wrk/flow tag the per-kind limits count). A batch asset
    materialized from the asset graph or a backfill runs as Dagster's own asset job: its assets say."""
    if job_name in FLOWS:
        return FLOWS[job_name]
    from domain.batch import batch_jobs  # the seven batch jobs' asset jobs (orchestration_defs/batch_jobs.py)

    if job_name in {job.job_name for job in batch_jobs.JOBS}:
        return "batch"
    if set(asset_names) & {job.asset_name for job in batch_jobs.JOBS}:
        return "batch"
    return HOUSEKEEPING


def tenant_in_config(job_name: str, run_config: Mapping[str, Any]) -> str | None:
    """The tenant a run works for, from its run config alone (None: none named). A phase worker has
    none: it takes several tenants' triggers and is limited per kind (and by PHASE_WORKERS); a tenant
    tag would let one tenant's builds, holding its runs at the tenant limit, hold every tenant's phase
    workers queued behind it (the phase sensor counts queued workers as live)."""
    if job_name in TENANT_IN_CONFIG:
        return _at(run_config, TENANT_IN_CONFIG[job_name])
    return None


def tenant_in_store(job_name: str, run_config: Mapping[str, Any]) -> str | None:
    """The tenant of the version or execution a UI launch names, read from the store (None when the job
    names none, the row does not exist, or the store cannot be read: the run then counts only against its
    kind, and fails on its own if the row is missing)."""
    spec = TENANT_IN_STORE.get(job_name)
    row_id = _at(run_config, spec[0]) if spec else None
    if spec is None or row_id is None:
        return None
    from domain.core import models
    from domain.core.settings import get_settings
    from domain.core.store import engine_for, read_transaction

    try:
        with read_transaction(engine_for(get_settings().database_url)) as session:
            row = session.get(getattr(models, spec[1]), row_id)
            return str(row.tenant_id) if row is not None and row.tenant_id else None
    except Exception:  # a limit tag is not worth refusing the launch over
        logger.warning("could not read the tenant of %s %s from the store", spec[1], row_id, exc_info=True)
        return None


def run_limit_tags(job_name: str, run_config: Mapping[str, Any], asset_names: Iterable[str] = ()) -> dict[str, str]:
    """Every tag the limits count, for a run of this job with this config (and these assets)."""
    tags = concurrency_tags(job_name, run_config) | {TAG_FLOW: flow_of(job_name, asset_names)}
    tenant = tenant_in_config(job_name, run_config) or tenant_in_store(job_name, run_config)
    if tenant:
        tags[TAG_TENANT] = tenant
    return tags


def tenant_limit(limit: int) -> dict[str, Any]:
    """At most `limit` runs of each tenant in progress at once."""
    return {"key": TAG_TENANT, "value": {"applyLimitPerUniqueValue": True}, "limit": limit}


class FlowRunCoordinator(QueuedRunCoordinator):
    """The QueuedRunCoordinator, tagging each run for the limits before it is queued, with a per-tenant
    limit from its config (`tenant_max_concurrent_runs`, an int or `env: NAME`) or, when unset, from
    TENANT_MAX_CONCURRENT_RUNS (domain/core/settings.py)."""

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            **cast(dict[str, Any], super().config_type()),
            "tenant_max_concurrent_runs": Field(
                IntSource,
                is_required=False,
                description="Runs of one tenant (wrk/tenant_id) in progress at once; default "
                "TENANT_MAX_CONCURRENT_RUNS. -1: no per-tenant limit.",
            ),
        }

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> Any:
        from domain.core.logs import quiet_sensor_ticks
        from domain.core.settings import Settings, tenant_limit_value

        # Every process that opens the instance builds its run coordinator, the daemon first among them:
        # its per-evaluation sensor line ("Checking for new runs for sensor") goes to DEBUG.
        quiet_sensor_ticks()
        config = dict(config_value)
        limit = config.pop("tenant_max_concurrent_runs", None)
        if limit is None:
            # This one variable, not the whole Settings: every process that loads dagster.yaml (webserver,
            # daemon, run workers, `dagster instance migrate`) must not fail on an unrelated setting.
            default = Settings.model_fields["tenant_max_concurrent_runs"].default
            limit = int(os.environ.get("TENANT_MAX_CONCURRENT_RUNS", default))
        limit = tenant_limit_value(int(limit))
        limits = [lim for lim in config.get("tag_concurrency_limits") or [] if lim.get("key") != TAG_TENANT]
        if limit != -1:  # -1: no per-tenant limit
            limits.append(tenant_limit(limit))
        config["tag_concurrency_limits"] = limits
        return super().from_config_value(inst_data, config)

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        assets = [key.to_user_string() for key in run.asset_selection or ()]
        wanted = run_limit_tags(run.job_name, run.run_config, assets)
        missing = {k: v for k, v in wanted.items() if run.tags.get(k) != v}
        if wanted[TAG_FLOW] == HOUSEKEEPING and PRIORITY_TAG not in run.tags:
            # Sweepers, notifications, reconciliation: short, and what gets a stuck flow moving again.
            # Dequeued first (Dagster's run priority), so a burst of builds or phases holding every slot
            # does not hold them queued behind it; a priority set at launch is kept.
            missing[PRIORITY_TAG] = HOUSEKEEPING_PRIORITY
        if missing and run.status == DagsterRunStatus.NOT_STARTED:
            self._instance.add_run_tags(run.run_id, missing)
            tagged = self._instance.get_run_by_id(run.run_id)
            if tagged is not None:
                context = context._replace(dagster_run=tagged)
        return super().submit_run(context)
