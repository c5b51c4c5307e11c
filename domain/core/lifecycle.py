"""The lifecycle (Flow 13): every status of automation versions and projects, and every allowed move;
and, in its own section below, the workflow bindings' statuses and moves.

`transition()` is the only code that changes a status column of versions and projects, and
`transition_binding()` the only code that changes a workflow binding's. Each checks the move against its
table, updates the row, and writes the audit row in the caller's transaction. A guard in
`domain.core.models` refuses any flush that changes one of these statuses without going through them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from domain.core import models
from domain.core.models import AuditLog, AutomationVersion, Project, WorkflowBinding
from domain.core.statuses import (
    AUTOMATION_VERSION_TRANSITIONS,
    INITIAL_BINDING_STATUS,
    INITIAL_STATUS,
    PROJECT_TRANSITIONS,
    ROLLBACK_ACTION,
    ROLLBACK_TRANSITIONS,
    WORKFLOW_BINDING_TRANSITIONS,
    BindingStatus,
    Status,
)

__all__ = [
    "AUTOMATION_VERSION_TRANSITIONS",
    "INITIAL_BINDING_STATUS",
    "INITIAL_STATUS",
    "PROJECT_TRANSITIONS",
    "ROLLBACK_ACTION",
    "ROLLBACK_TRANSITIONS",
    "WORKFLOW_BINDING_TRANSITIONS",
    "Actor",
    "BindingStatus",
    "InvalidStatusTransition",
    "Status",
    "allowed",
    "binding_allowed",
    "record",
    "transition",
    "transition_binding",
    "transitions_for",
]


class InvalidStatusTransition(Exception):
    """A move the lifecycle does not allow. The API maps it to 409 `invalid_status_transition`."""

    code = "invalid_status_transition"

    def __init__(self, entity_type: str, entity_id: str, current: str, requested: str) -> None:
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.current = current
        self.requested = requested
        # Plain text, not reprs: `current` may be a Status, whose repr is `<Status.LIVE: 'Live'>`.
        super().__init__(f"{entity_type} {entity_id}: {_text(current)} cannot move to {_text(requested)}")


def _text(status: object) -> str:
    return status.value if isinstance(status, enum.Enum) else str(status)


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a person (their user id) or a part of the system (its name)."""

    type: str
    id: str

    @classmethod
    def user(cls, user_id: str) -> Actor:
        return cls("user", user_id)

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls("system", component)


def transitions_for(entity_type: str) -> Mapping[Status, frozenset[Status]]:
    return PROJECT_TRANSITIONS if entity_type == "projects" else AUTOMATION_VERSION_TRANSITIONS


def allowed(entity: AutomationVersion | Project, to: Status, action: str | None = None) -> bool:
    current = Status(entity.status)
    if to in transitions_for(entity.__tablename__)[current]:
        return True
    return (
        action == ROLLBACK_ACTION
        and entity.__tablename__ == "automation_versions"
        and to in ROLLBACK_TRANSITIONS.get(current, frozenset())
    )


def transition(
    session: Session,
    entity: AutomationVersion | Project,
    to: Status,
    *,
    actor: Actor,
    reason: str | None = None,
    action: str = "status_change",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """Move `entity` to `to`, with its audit row, in the caller's transaction."""
    entity_type = entity.__tablename__
    previous = Status(entity.status)
    if not allowed(entity, to, action):
        raise InvalidStatusTransition(entity_type, entity.id, previous, to)
    now = datetime.now(UTC)
    models.allow_status_write(entity, to)
    entity.status = to.value
    entity.status_changed_at = now
    entry = models.AuditLog(
        tenant_id=entity.tenant_id,
        entity_type=entity_type,
        entity_id=entity.id,
        action=action,
        actor_type=actor.type,
        actor_id=actor.id,
        previous_status=previous.value,
        new_status=to.value,
        reason=reason,
        details=dict(metadata or {}),
        created_at=now,
    )
    session.add(entry)
    return entry


def record(
    session: Session,
    *,
    tenant_id: str | None,
    entity_type: str,
    entity_id: str,
    action: str,
    actor: Actor,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """An audit row for an event that is not a status change (build_complete, requeue, ...)."""
    entry = models.AuditLog(
        tenant_id=tenant_id,
        entity_type=entity_type,
        entity_id=entity_id,
        action=action,
        actor_type=actor.type,
        actor_id=actor.id,
        reason=reason,
        details=dict(metadata or {}),
        created_at=datetime.now(UTC),
    )
    session.add(entry)
    return entry


# -- workflow bindings ---------------------------------------------------------------------------------
# A binding links a version to its workflow on the WRK Platform. It is born `pending` (no workflow yet);
# a build makes it `active` or `error`; a deploy that supersedes its version makes it `inactive`, and a
# deploy or rollback of that version makes it `active` again. An `error` binding goes back to `pending`
# only when its build is requested or re-executed. A build never touches an `active` or `inactive`
# binding: a stale build run must not break a version that is already built or Live.


def binding_allowed(binding: WorkflowBinding, to: BindingStatus) -> bool:
    return to in WORKFLOW_BINDING_TRANSITIONS[BindingStatus(binding.status)]


def transition_binding(
    session: Session,
    binding: WorkflowBinding,
    to: BindingStatus,
    *,
    actor: Actor,
    reason: str | None = None,
    action: str = "status_change",
    metadata: dict[str, Any] | None = None,
) -> AuditLog | None:
    """Move `binding` to `to`, with its audit row, in the caller's transaction. A binding already in
    `to` is left alone (None: nothing moved, nothing audited); a move the table does not allow raises."""
    previous = BindingStatus(binding.status)
    if previous is to:
        return None
    if not binding_allowed(binding, to):
        raise InvalidStatusTransition("workflow_bindings", binding.id, previous, to)
    now = datetime.now(UTC)
    models.allow_status_write(binding, to)
    binding.status = to.value
    binding.updated_at = now
    entry = models.AuditLog(
        tenant_id=binding.tenant_id,
        entity_type="workflow_bindings",
        entity_id=binding.id,
        action=action,
        actor_type=actor.type,
        actor_id=actor.id,
        previous_status=previous.value,
        new_status=to.value,
        reason=reason,
        details={"automation_version_id": binding.automation_version_id, **(metadata or {})},
        created_at=now,
    )
    session.add(entry)
    return entry
