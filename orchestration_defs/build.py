"""Flow 22 as a Dagster job: load -> create -> record -> notify, launched by the build queue sensor.

A rejected build (lookup failure, tenant mismatch, invalid or refused blueprint, platform unreachable
after retries) marks the binding `error`, alerts ops, and fails the run as permanent: the queue does
not retry it. Re-executing from failure is safe: the platform call carries the binding id as its
idempotency key, and `record` and `notify` do nothing twice.
"""

from typing import Any

import dagster as dg

from domain import build
from domain.settings import get_settings
from domain.store import transaction
from domain.triggers import BuildTrigger
from resources.database import DatabaseResource
from resources.errors import PermanentError, RetryableError, ValidationRejected
from resources.wrk import WrkPlatformResource
from sensors.queue import mark_permanent, queue_sensor

# 5xx answers and timeouts are retried 3 times (4 calls), with the one policy's exponential backoff.
CREATE_ATTEMPTS = 4


class BuildConfig(dg.Config):
    tenant_id: str
    project_id: str
    automation_version_id: str
    workflow_binding_id: str


def _trigger(config: BuildConfig) -> BuildTrigger:
    return BuildTrigger(**config.model_dump())


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


@dg.op(description="Re-select the version, project and binding by (tenant, ids); the store decides.")
def load(context: dg.OpExecutionContext, config: BuildConfig, database: DatabaseResource) -> build.BuildTarget:
    trigger = _trigger(config)
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
    context.add_output_metadata(
        {"project": target.project_name, "version": target.version_number, "status": target.version_status}
    )
    return target


@dg.op(description="Create the workflow on the WRK Platform (idempotency key: the binding id).")
def create(
    context: dg.OpExecutionContext,
    config: BuildConfig,
    target: build.BuildTarget,
    database: DatabaseResource,
    wrk: WrkPlatformResource,
) -> dict[str, Any]:
    if target.already_built:
        context.log.info(f"already built: workflow {target.wrk_workflow_id}; no platform call")
        return {"id": target.wrk_workflow_id, "url": target.wrk_workflow_url}
    trigger = _trigger(config)
    errors = build.blueprint_errors(target.blueprint)
    if errors:
        raise _stop(
            context,
            database,
            trigger,
            build.BuildRejected("invalid_blueprint", "the blueprint's structure is invalid", errors),
        )
    client = wrk.client()
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
    finally:
        client.close()
    context.add_output_metadata(
        {
            "workflow_id": workflow.id,
            "workflow_url": dg.MetadataValue.url(workflow.url),
            "platform_calls": client.attempts,
        }
    )
    return {"id": workflow.id, "url": workflow.url}


@dg.op(description="One transaction: binding active, version and project to QA & Testing, tasks, audit.")
def record(
    context: dg.OpExecutionContext, target: build.BuildTarget, workflow: dict[str, Any], database: DatabaseResource
) -> dict[str, Any]:
    with transaction(database.engine) as session:
        recorded = build.record_build(session, target, workflow["id"], workflow["url"])
    context.add_output_metadata({"recorded": recorded, "workflow_url": dg.MetadataValue.url(workflow["url"])})
    return workflow


@dg.op(description="Outbox: build_complete to the client, qa_ready to ops, in-app to the project owner.")
def notify(
    context: dg.OpExecutionContext, target: build.BuildTarget, workflow: dict[str, Any], database: DatabaseResource
) -> None:
    with transaction(database.engine) as session:
        added = build.notify_build(session, target, workflow["id"], workflow["url"], get_settings().ops_email)
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


def _run_config(payload: Any) -> dict[str, Any]:
    config = dict(payload)
    return {"ops": {"load": {"config": config}, "create": {"config": config}}}


def _tags(payload: Any) -> dict[str, str]:
    return {"wrk/project_id": payload["project_id"], "wrk/automation_version_id": payload["automation_version_id"]}


build_queue_sensor = queue_sensor("build", build_automation_version, _run_config, _tags)
