"""Reconciliation after deploys: the platform runs exactly the workflows of Live versions.

A deploy deactivates the previous version's workflow after its commit; when that call fails the commit
stands and ops are alerted. This job (scheduled, and launchable from the UI) finds every binding that is
not the live one of a Live version — inactive bindings, and bindings of Paused versions — and
deactivates its workflow on the platform if the platform still has it active; and it activates the
workflow of a Live version that the platform has inactive.
"""

import dagster as dg
from sqlalchemy import or_, select

from domain import lifecycle
from domain.lifecycle import Actor, Status
from domain.models import AutomationVersion, BindingStatus, WorkflowBinding
from domain.store import transaction
from resources.database import DatabaseResource
from resources.errors import ExternalServiceError, NotFound
from resources.wrk import WrkPlatformResource


@dg.op(description="Deactivate platform workflows whose binding is inactive or whose version is paused.")
def reconcile_platform_workflows(
    context: dg.OpExecutionContext, database: DatabaseResource, wrk: WrkPlatformResource
) -> dict:
    with transaction(database.engine) as session:
        rows = session.execute(
            select(
                WorkflowBinding.id,
                WorkflowBinding.tenant_id,
                WorkflowBinding.wrk_workflow_id,
                AutomationVersion.id,
                AutomationVersion.status,
            )
            .join(
                AutomationVersion,
                (AutomationVersion.tenant_id == WorkflowBinding.tenant_id)
                & (AutomationVersion.id == WorkflowBinding.automation_version_id),
            )
            .where(
                WorkflowBinding.wrk_workflow_id.is_not(None),
                or_(
                    WorkflowBinding.status == BindingStatus.INACTIVE.value,
                    AutomationVersion.status == Status.PAUSED.value,
                ),
            )
        ).all()
    client = wrk.client()
    deactivated: list[str] = []
    activated: list[str] = []
    failed: list[str] = []
    try:
        for binding_id, tenant_id, workflow_id, version_id, _status in rows:
            try:
                if not client.get_workflow(workflow_id).active:
                    continue
                client.deactivate_workflow(workflow_id)
            except NotFound:
                continue
            except ExternalServiceError as exc:
                context.log.warning(f"could not deactivate {workflow_id}: {exc}")
                failed.append(workflow_id)
                continue
            deactivated.append(workflow_id)
            with transaction(database.engine) as session:
                lifecycle.record(
                    session,
                    tenant_id=tenant_id,
                    entity_type="workflow_bindings",
                    entity_id=binding_id,
                    action="workflow_deactivated",
                    actor=Actor.system("reconciliation"),
                    metadata={"workflow_id": workflow_id, "automation_version_id": version_id},
                )
        # And the other way round: a Live version's workflow must run on the platform.
        with transaction(database.engine) as session:
            live = session.execute(
                select(
                    WorkflowBinding.id, WorkflowBinding.tenant_id, WorkflowBinding.wrk_workflow_id, AutomationVersion.id
                )
                .join(
                    AutomationVersion,
                    (AutomationVersion.tenant_id == WorkflowBinding.tenant_id)
                    & (AutomationVersion.id == WorkflowBinding.automation_version_id),
                )
                .where(WorkflowBinding.wrk_workflow_id.is_not(None), AutomationVersion.status == Status.LIVE.value)
            ).all()
        for binding_id, tenant_id, workflow_id, version_id in live:
            try:
                if client.get_workflow(workflow_id).active:
                    continue
                client.activate_workflow(workflow_id)
            except ExternalServiceError as exc:
                context.log.warning(f"could not activate live workflow {workflow_id}: {exc}")
                failed.append(workflow_id)
                continue
            activated.append(workflow_id)
            with transaction(database.engine) as session:
                lifecycle.record(
                    session,
                    tenant_id=tenant_id,
                    entity_type="workflow_bindings",
                    entity_id=binding_id,
                    action="workflow_activated",
                    actor=Actor.system("reconciliation"),
                    metadata={"workflow_id": workflow_id, "automation_version_id": version_id},
                )
    finally:
        client.close()
    context.add_output_metadata(
        {
            "checked": len(rows) + len(live),
            "deactivated": len(deactivated),
            "activated": len(activated),
            "failed": len(failed),
        }
    )
    if failed:
        raise dg.Failure(description=f"{len(failed)} workflow(s) could not be deactivated: {failed}")
    return {"deactivated": deactivated, "activated": activated}


@dg.job(
    executor_def=dg.in_process_executor,
    description="Deactivate platform workflows that should not run (after failed post-deploy deactivations).",
)
def reconcile_deployments() -> None:
    reconcile_platform_workflows()


reconcile_deployments_schedule = dg.ScheduleDefinition(
    job=reconcile_deployments, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
