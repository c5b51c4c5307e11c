"""Reconciliation of deploys: `domain.deploy.reconcile` on a schedule (schedules/deploy.py) and from the UI.

It finishes or undoes every deployment whose request died or gave up (a `deployments` row still open
past its deadline), then makes the platform run exactly the workflows of Live versions: it
deactivates every active workflow whose version is not Live and activates a Live version's inactive
one. Each act is audited; ops get one alert when it had to act. `wrk-orch reconcile-deployments`
runs the same function.
"""

from typing import Any

import dagster as dg

from domain import deploy
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
