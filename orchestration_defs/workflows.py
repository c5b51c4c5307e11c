"""Workflow executions as a Dagster job: `workflow_execution` runs (or resumes) one execution from the
state saved in the store (domain.workflows.workflow_engine). Launched by the `workflow` queue sensor (a new
execution) and the `approval` queue sensor (a decision or a timeout's default resumes it); a launch or a
re-execution from the UI with the execution id resumes it the same way: finished steps are never run again.
Its sensors, and the approvals' sweeper's, are in sensors/workflows.py; the sweeper's job in
orchestration_defs/approvals.py.

The run succeeds when it has taken the execution as far as it can go now (finished, or waiting for an
approval); it fails only when the engine itself could not run (the store down, a bug): the queue then
retries the trigger with backoff, and the next run resumes.
"""

import dagster as dg

from domain.core.settings import get_settings
from domain.core.store import transaction
from domain.queue import queue
from domain.workflows import workflow_engine
from orchestration_defs.executors import executor_for
from orchestration_defs.tags import TAG_ATTEMPT, TAG_KIND
from resources.dagster_resources import DatabaseResource, ServicesResource

TAG_EXECUTION = "wrk/workflow_execution_id"
TAG_WORKFLOW = "wrk/workflow_id"


class WorkflowExecutionConfig(dg.Config):
    workflow_execution_id: str
    tenant_id: str | None = None  # a hint (the store decides)


def _exchange_for(queue_name: str) -> str:
    """A publish step to the batch-jobs queue goes through its exchange; other queues via the default."""
    settings = get_settings()
    return settings.bi_batch_jobs_exchange if queue_name == settings.bi_batch_jobs_queue else ""


@dg.op(description="Run the workflow execution's ready steps from its saved state until it ends or waits.")
def run_workflow_execution(
    context: dg.OpExecutionContext,
    config: WorkflowExecutionConfig,
    database: DatabaseResource,
    services: ServicesResource,
) -> None:
    from domain.core.models import WorkflowExecution

    with transaction(database.engine) as session:
        execution = session.get(WorkflowExecution, config.workflow_execution_id)
        if execution is None:
            raise dg.Failure(
                description=f"workflow execution {config.workflow_execution_id} not found", allow_retries=False
            )
        tags = {TAG_EXECUTION: execution.id, "wrk/tenant_id": execution.tenant_id}
        if execution.workflow_id:
            tags[TAG_WORKFLOW] = execution.workflow_id
    context.instance.add_run_tags(context.run_id, tags)
    try:
        status = workflow_engine.run(
            database.engine,
            config.workflow_execution_id,
            call=services.services.call,
            run_id=context.run_id,
            max_parallel=get_settings().workflow_max_parallel_steps,
            exchange_for=_exchange_for,
            outbox_transport=get_settings().batch_transport == "outbox",
        )
    except Exception as exc:
        # The queue retries a failed run (the next one resumes); on the trigger's last attempt the
        # execution ends `failed` here, so it does not stay `running` with no owner.
        kind, attempt = context.run.tags.get(TAG_KIND), int(context.run.tags.get(TAG_ATTEMPT, "0") or 0)
        if kind in ("workflow", "approval") and attempt >= queue.policy(kind).max_attempts:
            with transaction(database.engine) as session:
                workflow_engine.abandon(
                    session,
                    config.workflow_execution_id,
                    f"run failed on its last attempt: {type(exc).__name__}: {exc}",
                )
        raise
    context.log.info(f"workflow execution {config.workflow_execution_id} is {status}")
    context.add_output_metadata({"execution_status": status})


@dg.job(
    executor_def=executor_for("workflows", dg.in_process_executor),  # one op; steps on its thread pool
    description="Run or resume one workflow execution from the store.",
    tags={"wrk/flow": "workflow"},
)
def workflow_execution() -> None:
    run_workflow_execution()
