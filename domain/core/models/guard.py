"""The status guard: only the lifecycle may write a lifecycle status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    event,
)
from sqlalchemy.orm import Session

from domain.core.models.tenancy import (
    AutomationVersion,
    Project,
    WorkflowBinding,
)
from domain.core.statuses import INITIAL_STATUS, BindingStatus, Status

# ---------------------------------------------------------------------------------------------------
# The status guard: only domain.core.lifecycle.transition() may write a lifecycle status, and only
# domain.core.lifecycle.transition_binding() a workflow binding's (a new binding may start in any status).

_LIFECYCLE_ENTITIES = (AutomationVersion, Project)


class StatusWriteOutsideLifecycle(RuntimeError):
    pass


def allow_status_write(entity: AutomationVersion | Project | WorkflowBinding, to: Status | BindingStatus) -> None:
    entity.__dict__["_lifecycle_allowed"] = to.value


@event.listens_for(Session, "before_flush")
def _guard_status_writes(session: Session, _context: Any, _instances: Any) -> None:
    from sqlalchemy import inspect as sa_inspect

    for obj in session.new:
        if isinstance(obj, _LIFECYCLE_ENTITIES):
            if obj.status is None:
                obj.status = INITIAL_STATUS.value
            if obj.status != INITIAL_STATUS.value and obj.__dict__.get("_lifecycle_allowed") != obj.status:
                raise StatusWriteOutsideLifecycle(
                    f"new {obj.__tablename__} must start {INITIAL_STATUS.value!r}, not {obj.status!r}"
                )
    for obj in session.dirty:
        if isinstance(obj, (*_LIFECYCLE_ENTITIES, WorkflowBinding)):
            history = sa_inspect(obj).attrs.status.history  # type: ignore[attr-defined]
            if history.has_changes() and obj.__dict__.get("_lifecycle_allowed") != obj.status:
                raise StatusWriteOutsideLifecycle(
                    f"{obj.__tablename__} {obj.id}: status written outside domain.core.lifecycle.transition()"
                )
    for obj in list(session.new) + list(session.dirty):
        obj.__dict__.pop("_lifecycle_allowed", None)
