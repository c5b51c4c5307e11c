"""Flow 22 as a Dagster job: load -> create -> record -> notify, launched by the build queue sensor, or
from the Dagster UI with only `automation_version_id` in `load`'s config.

A UI launch does what `POST /v1/automation-versions/{id}/build` does (`domain.build.build.begin_build`: Draft
or Error -> Build in Progress, binding created, audited), with the run itself as the build; a launch
for a version that cannot be built fails at once with the reason, before any write or alert.

A rejected build (lookup failure, tenant mismatch, invalid or refused blueprint, platform unreachable
after retries) marks the binding `error` and the version `Error`, alerts ops, and fails the run as
permanent: the queue does not retry it. Re-executing it from failure resumes it (`create` moves it back
to Build in Progress) and completes it with the same workflow: the platform call carries the binding id
as its idempotency key, and `record` and `notify` do nothing twice.

A run for a version outside Build in Progress (a stale re-execution, a duplicate run) changes nothing:
the step that finds it logs the reason and tags the run `wrk/build_skipped`, and the later steps are
skipped; the run succeeds.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from domain.build import build
from domain.core.errors import PermanentError, RetryableError, ValidationRejected
from domain.core.lifecycle import Actor
from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue.triggers import BuildTrigger
from orchestration_defs.trigger_runs import mark_permanent
from resources.dagster_resources import DatabaseResource, WrkPlatformResource

# 5xx answers and timeouts are retried 3 times (4 calls), with the one policy's exponential backoff.
CREATE_ATTEMPTS = 4
TAG_SKIPPED = "wrk/build_skipped"


class BuildConfig(dg.Config):
    """The queue sets every field. A launch from the UI needs only `automation_version_id`: it creates
    the binding, as the API's build request does."""

    automation_version_id: str
    tenant_id: str | None = None  # a hint: the store decides
    project_id: str | None = None
    workflow_binding_id: str | None = None


def _stop(
    context: dg.OpExecutionContext, database: DatabaseResource, trigger: BuildTrigger, rejected: build.BuildRejected
) -> dg.Failure:
    with transaction(database.engine) as session:
        build.reject(session, trigger, rejected, get_settings().ops_email, run_id=context.run_id)
    mark_permanent(context)
    return dg.Failure(
        description=f"build rejected ({rejected.reason}): {rejected}",
        metadata={"reason": rejected.reason, "details": dg.MetadataValue.json(rejected.details or {})},
        allow_retries=False,
    )


def _skip(context: dg.OpExecutionContext, reason: str) -> None:
    """Say why this run leaves the version alone; no output, so the later steps are skipped."""
    context.log.warning(f"nothing to build: {reason}")
    context.instance.add_run_tags(context.run_id, {TAG_SKIPPED: reason})


def _launch(context: dg.OpExecutionContext, config: BuildConfig, database: DatabaseResource) -> BuildTrigger:
    if config.workflow_binding_id is not None:
        if config.tenant_id is None or config.project_id is None:
            raise dg.Failure(description="a build trigger with a workflow_binding_id needs tenant_id and project_id")
        return BuildTrigger(
            tenant_id=config.tenant_id,
            project_id=config.project_id,
            automation_version_id=config.automation_version_id,
            workflow_binding_id=config.workflow_binding_id,
        )
    user = context.run.tags.get("dagster/user")  # set by Dagster+ launches; absent in OSS
    actor = Actor.user(user) if user else Actor.system("dagster_ui")
    try:
        with transaction(database.engine) as session:
            return build.launch(session, config.automation_version_id, config.tenant_id, actor)
    except build.LaunchRefused as refused:
        raise dg.Failure(
            description=f"{refused} (request builds with POST /v1/automation-versions/{{id}}/build)"
        ) from None


@dg.op(
    out=dg.Out(build.BuildTarget, is_required=False),
    description="Re-select the version, project and binding by (tenant, ids); the store decides.",
)
def load(
    context: dg.OpExecutionContext, config: BuildConfig, database: DatabaseResource
) -> Iterator[dg.Output[build.BuildTarget]]:
    trigger = _launch(context, config, database)
    try:
        with transaction(database.engine) as session:
            target = build.load_target(session, trigger)
    except build.BuildRejected as rejected:
        raise _stop(context, database, trigger, rejected) from rejected
    # Launches from the UI get the same tags the queue sensor sets.
    context.instance.add_run_tags(
        context.run_id,
        {
            "wrk/tenant_id": target.tenant_id,
            "wrk/project_id": target.project_id,
            "wrk/automation_version_id": target.automation_version_id,
        },
    )
    reason = build.stale_reason(target)
    if reason is not None:
        _skip(context, reason)
        return
    yield dg.Output(
        target,
        metadata={
            "project": target.project_name,
            "version": target.version_number,
            "status": target.version_status,
            "workflow_binding_id": target.workflow_binding_id,
        },
    )


@dg.op(
    out=dg.Out(dict, is_required=False),
    description="Create the workflow on the WRK Platform (idempotency key: the binding id).",
)
def create(
    context: dg.OpExecutionContext,
    loaded: build.BuildTarget,
    database: DatabaseResource,
    wrk: WrkPlatformResource,
) -> Iterator[dg.Output[dict[str, Any]]]:
    # Re-read now: a re-execution from failure reuses `load`'s output from an earlier run.
    trigger = loaded.trigger
    try:
        with transaction(database.engine) as session:
            target, reason = build.prepare(session, trigger, run_id=context.run_id)
    except build.BuildRejected as rejected:
        raise _stop(context, database, trigger, rejected) from rejected
    if reason is not None:
        _skip(context, reason)
        return
    if target.already_built:
        context.log.info(f"already built: workflow {target.wrk_workflow_id}; no platform call")
        yield dg.Output(
            {"id": target.wrk_workflow_id, "url": target.wrk_workflow_url},
            metadata={"already_built": True, "platform_calls": 0},
        )
        return
    errors = build.blueprint_errors(target.blueprint)
    if errors:
        raise _stop(
            context,
            database,
            trigger,
            build.BuildRejected("invalid_blueprint", "the blueprint's structure is invalid", errors),
        )
    client = wrk.client
    try:
        workflow = client.create_workflow(
            target.workflow_name,
            target.blueprint,
            target.tenant_id,
            idempotency_key=target.workflow_binding_id,
            retry=client.retry.override(max_attempts=CREATE_ATTEMPTS),
        )
    except ValidationRejected as exc:
        raise _stop(
            context,
            database,
            trigger,
            build.BuildRejected("blueprint_rejected", "the WRK Platform rejected the blueprint", exc.details),
        ) from exc
    except RetryableError as exc:
        raise _stop(
            context,
            database,
            trigger,
            build.BuildRejected(
                "platform_unavailable",
                f"the WRK Platform did not answer after {CREATE_ATTEMPTS} attempts: {exc}",
                {"status": exc.status},
            ),
        ) from exc
    except PermanentError as exc:
        raise _stop(context, database, trigger, build.BuildRejected("platform_error", str(exc), exc.details)) from exc
    yield dg.Output(
        {"id": workflow.id, "url": workflow.url},
        metadata={
            "workflow_id": workflow.id,
            "workflow_url": dg.MetadataValue.url(workflow.url),
            "platform_calls": client.attempts,
        },
    )


@dg.op(
    out=dg.Out(dict, is_required=False),
    description="One transaction: binding active, version and project to QA & Testing, tasks, audit.",
)
def record(
    context: dg.OpExecutionContext, loaded: build.BuildTarget, workflow: dict[str, Any], database: DatabaseResource
) -> Iterator[dg.Output[dict[str, Any]]]:
    with transaction(database.engine) as session:
        outcome = build.record_build(session, loaded, workflow["id"], workflow["url"])
    if outcome not in (build.RECORDED, build.ALREADY_RECORDED):
        _skip(context, outcome)
        return
    yield dg.Output(
        workflow,
        metadata={"recorded": outcome == build.RECORDED, "workflow_url": dg.MetadataValue.url(workflow["url"])},
    )


@dg.op(description="Outbox: build_complete to the client, qa_ready to ops, in-app to the project owner.")
def notify(
    context: dg.OpExecutionContext, loaded: build.BuildTarget, workflow: dict[str, Any], database: DatabaseResource
) -> None:
    with transaction(database.engine) as session:
        added = build.notify_build(session, loaded, workflow["id"], workflow["url"], get_settings().ops_email)
    context.add_output_metadata({"notifications_added": added})


@dg.job(
    executor_def=dg.in_process_executor,  # four short sequential steps: one process is fastest
    description="Flow 22: build an automation version on the WRK Platform and move it to QA & Testing.",
    tags={"wrk/flow": "build"},
)
def build_automation_version() -> None:
    target = load()
    workflow = record(target, create(target))
    notify(target, workflow)
