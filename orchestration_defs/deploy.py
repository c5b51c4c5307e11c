"""Reconciliation of deploys, and the deploy history as a Dagster asset.

Reconciliation: `domain.deploy.reconcile` on a schedule (schedules/deploy.py) and from the UI. It
finishes or undoes every deployment whose request died or gave up (a `deployments` row still open past
its deadline), then makes the platform run exactly the workflows of Live versions: it
deactivates every active workflow whose version is not Live and activates a Live version's inactive
one. Each act is audited; ops get one alert when it had to act. `wrk-orch reconcile-deployments`
runs the same function.

History: `live_version`, an external asset with a dynamic partition per project, its materializations
reported (runless) by the outbox's delivery run from the messages each deploy commit records
(domain.deploy.history), so the asset's page is each project's deploy timeline.
"""

from datetime import datetime
from typing import Any

import dagster as dg

from domain import deploy
from domain.core import notifications
from domain.core.errors import RetryableError
from domain.core.models import Notification
from domain.core.settings import get_settings
from orchestration_defs.tags import HOUSEKEEPING
from resources.dagster_resources import DatabaseResource, WrkPlatformResource


@dg.op(
    description="Finish or undo interrupted deployments, then make the platform run exactly the workflows "
    "of Live versions."
)
def reconcile_platform_workflows(
    context: dg.OpExecutionContext, database: DatabaseResource, wrk: WrkPlatformResource
) -> dict[str, Any]:
    settings = get_settings()
    report = deploy.reconcile(
        deploy.Saga(
            engine=database.engine,
            platform=wrk.client,
            ops_email=settings.ops_email,
            deadline_s=settings.deploy_deadline_s,
            project_live=settings.project_live_on_deploy,
            slack=bool(settings.slack_webhook_url),
        )
    )
    context.add_output_metadata(
        {
            "checked": report.checked,
            "finished": len(report.finished),
            "undone": len(report.undone),
            "deactivated": len(report.deactivated),
            "activated": len(report.activated),
            "failed": len(report.failed),
        }
    )
    if report.failed:
        raise dg.Failure(description=f"{len(report.failed)} deployment(s)/workflow(s) not reconciled: {report.failed}")
    return report.as_dict()


@dg.job(
    executor_def=dg.in_process_executor,
    description="Housekeeping: finish or undo interrupted deploys; the platform runs exactly the Live versions' "
    "workflows.",
    tags=HOUSEKEEPING,
)
def reconcile_deployments() -> None:
    reconcile_platform_workflows()


PROJECTS = "live_version_projects"  # the dynamic partitions' name
LIVE_VERSION_PROJECTS = dg.DynamicPartitionsDefinition(name=PROJECTS)

live_version = dg.AssetSpec(
    "live_version",
    description="What is Live per project (a partition per project: <tenant>/<project>): each deploy, resume, "
    "rollback and pause, reported from the store's outbox with its version, actor, reason and deployment.",
    partitions_def=LIVE_VERSION_PROJECTS,
    group_name="deploy",
    kinds={"wrk"},
)

# The metadata shown per event: payload field -> label.
_METADATA = {
    "action": "action",
    "version": "version",
    "automation_version_id": "version_id",
    "previous_version": "previous_version",
    "previous_version_id": "previous_version_id",
    "actor": "actor",
    "reason": "reason",
    "deployment_id": "deployment_id",
    "tenant": "tenant",
    "tenant_id": "tenant_id",
    "project_name": "project",
    "project_id": "project_id",
}


def _reported(instance: dg.DagsterInstance, partition: str, message_id: str, since: datetime) -> bool:
    """Whether this message was reported already (a redelivery after a lost record): the partition's
    materializations since the message was written (an hour's margin for the clocks of the two hosts), by
    the message id they carry."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=live_version.key, asset_partitions=[partition], after_timestamp=since.timestamp() - 3600
        ),
        limit=1000,
    ).records
    return any(
        (r.asset_materialization.tags or {}).get("wrk/outbox_message") == message_id
        for r in records
        if r.asset_materialization is not None
    )


def report_live_version(instance: dg.DagsterInstance, message: Notification) -> None:
    """One history message as a runless materialization of its project's partition. Any failure of the
    instance is retryable: the outbox backs the message off and tries again."""
    payload = message.payload
    partition = str(payload["partition"])
    values = {
        **payload,
        "version": f"v{payload['version_number']}",
        "previous_version": (
            f"v{payload['previous_version_number']}" if payload.get("previous_version_number") is not None else None
        ),
    }
    _subject, body = notifications.render(message.template, payload)
    try:
        if _reported(instance, partition, message.id, message.created_at):
            return
        instance.add_dynamic_partitions(PROJECTS, [partition])
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=live_version.key,
                partition=partition,
                description=body,
                metadata={name: str(values[key]) for key, name in _METADATA.items() if values.get(key) is not None},
                tags={"wrk/outbox_message": message.id, "wrk/action": str(payload["action"])},
            )
        )
    except Exception as exc:
        raise RetryableError("dagster", f"could not report to the Dagster instance: {exc!r}") from exc
