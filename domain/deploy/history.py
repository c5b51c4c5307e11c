"""The deploy history as Dagster shows it: each commit that changes what is Live (deploy, resume, rollback,
pause, also when reconciliation finishes one) adds a `dagster` message to the notification outbox in its
own transaction; the delivery run reports it as a materialization of the `live_version` asset, one
partition per project (orchestration_defs/deploy.py). A Dagster outage never fails a deploy: the message
waits and is retried with the outbox's backoff.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from domain.core import models, notifications
from domain.core.lifecycle import Actor
from domain.core.models import NotificationChannel

TEMPLATE = "live_version"

# What a Dagster partition key may not hold (dagster's INVALID_PARTITION_SUBSTRINGS: control characters and
# "..."), `/` (the key's separator) and `%` (the escape itself, so the encoding is injective).
_ESCAPED = re.compile(r"[%/\x00-\x1f\x7f]|\.(?=\.\.)")


def _component(name: str) -> str:
    return _ESCAPED.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def partition_key(tenant_name: str, project_name: str) -> str:
    """The project's partition of `live_version`: "<tenant>/<project>", readable in any script, unique
    (tenant names are unique, project names unique per tenant) and valid as a Dagster partition key:
    `%`, `/`, control characters and a run of dots are percent-encoded, so two projects never share one."""
    return f"{_component(tenant_name)}/{_component(project_name)}"


def record(
    session: Session,
    project: models.Project,
    version: models.AutomationVersion,
    *,
    action: str,
    actor: Actor,
    reason: str | None,
    deployment_id: str | None,
    previous: models.AutomationVersion | None,
    audit_id: int,
) -> bool:
    """Add the event to the outbox in the caller's transaction (the commit's): once per commit."""
    tenant = session.get(models.Tenant, project.tenant_id)
    assert tenant is not None
    payload: dict[str, Any] = {
        "partition": partition_key(tenant.name, project.name),
        "action": action,
        "tenant_id": tenant.id,
        "tenant": tenant.name,
        "project_id": project.id,
        "project_name": project.name,
        "automation_version_id": version.id,
        "version_number": version.version_number,
        "previous_version_id": previous.id if previous else None,
        "previous_version_number": previous.version_number if previous else None,
        "actor": actor.id,
        "actor_type": actor.type,
        "reason": reason or "-",
        "deployment_id": deployment_id,
        "audit_id": audit_id,
    }
    return notifications.notify(
        session,
        channel=NotificationChannel.DAGSTER,
        template=TEMPLATE,
        recipient=project.id,
        payload=payload,
        dedup_key=f"{TEMPLATE}:{version.id}:{audit_id}",
        tenant_id=project.tenant_id,
    )
