"""Reconciliation after deploys: the platform runs exactly the workflows of Live versions.

A deploy deactivates the previous version's workflow after its commit; when that call fails the commit
stands and ops are alerted. This job (scheduled, and launchable from the UI) finds every binding that is
not the live one of a Live version — inactive bindings, and bindings of Paused versions — and
deactivates its workflow on the platform if the platform still has it active; and it activates the
workflow of a Live version that the platform has inactive.
"""

import dagster as dg
from sqlalchemy import select

from domain import lifecycle
from domain.lifecycle import Actor, Status
from domain.models import AutomationVersion, BindingStatus, WorkflowBinding
from domain.store import transaction
from resources.database import DatabaseResource
from resources.errors import ExternalServiceError, NotFound
from resources.wrk import WrkPlatformResource


def should_run(binding_status: str, version_status: str) -> bool | None:
    """Whether a binding's workflow should be active on the platform; None: not this job's business
    (a version still in QA keeps whatever state the build left)."""
    if version_status == Status.LIVE.value:
        return True
    if binding_status == BindingStatus.INACTIVE.value or version_status == Status.PAUSED.value:
        return False
    return None


@dg.op(
    description="Make the platform run exactly the workflows of Live versions: deactivate those of "
    "inactive bindings and Paused versions, activate a Live version's inactive one."
)
def reconcile_platform_workflows(
    context: dg.OpExecutionContext, database: DatabaseResource, wrk: WrkPlatformResource
) -> dict:
    with transaction(database.engine) as session:
        rows = session.execute(
            select(
                WorkflowBinding.id,
                WorkflowBinding.tenant_id,
                WorkflowBinding.wrk_workflow_id,
                WorkflowBinding.status,
                AutomationVersion.id,
                AutomationVersion.status,
            )
            .join(
                AutomationVersion,
                (AutomationVersion.tenant_id == WorkflowBinding.tenant_id)
                & (AutomationVersion.id == WorkflowBinding.automation_version_id),
            )
            .where(WorkflowBinding.wrk_workflow_id.is_not(None))
        ).all()
    changed: dict[str, list[str]] = {"activated": [], "deactivated": []}
    failed: list[str] = []
    client = wrk.client()
    try:
        for binding_id, tenant_id, workflow_id, binding_status, version_id, version_status in rows:
            wanted = should_run(binding_status, version_status)
            if wanted is None:
                continue
            try:
                if client.get_workflow(workflow_id).active == wanted:
                    continue
                if wanted:
                    client.activate_workflow(workflow_id)
                else:
                    client.deactivate_workflow(workflow_id)
            except NotFound:
                if wanted:
                    failed.append(workflow_id)
                continue  # a workflow that should not run and no longer exists is fine
            except ExternalServiceError as exc:
                context.log.warning(f"could not {'activate' if wanted else 'deactivate'} {workflow_id}: {exc}")
                failed.append(workflow_id)
                continue
            action = "activated" if wanted else "deactivated"
            changed[action].append(workflow_id)
            with transaction(database.engine) as session:
                lifecycle.record(
                    session,
                    tenant_id=tenant_id,
                    entity_type="workflow_bindings",
                    entity_id=binding_id,
                    action=f"workflow_{action}",
                    actor=Actor.system("reconciliation"),
                    metadata={"workflow_id": workflow_id, "automation_version_id": version_id},
                )
    finally:
        client.close()
    context.add_output_metadata(
        {
            "checked": len(rows),
            "deactivated": len(changed["deactivated"]),
            "activated": len(changed["activated"]),
            "failed": len(failed),
        }
    )
    if failed:
        raise dg.Failure(description=f"{len(failed)} workflow(s) could not be reconciled: {failed}")
    return changed


@dg.job(
    executor_def=dg.in_process_executor,
    description="Deactivate platform workflows that should not run (after failed post-deploy deactivations).",
)
def reconcile_deployments() -> None:
    reconcile_platform_workflows()


reconcile_deployments_schedule = dg.ScheduleDefinition(
    job=reconcile_deployments, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
