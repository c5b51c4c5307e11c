"""What a deploy request is and what every caller of the saga provides: the request, its route and
outcome, the refusals, the platform as the saga uses it, and the deployment row's state machine."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain.core import models
from domain.core.automation_versions import version_detail
from domain.core.lifecycle import Actor
from domain.core.models import BindingStatus, DeploymentStatus

log = logging.getLogger(__name__)

DEPLOYABLE_BINDING = (BindingStatus.ACTIVE.value, BindingStatus.INACTIVE.value)
D = DeploymentStatus

# The deployment row's state machine: forward only, every end says why.
DEPLOYMENT_TRANSITIONS: dict[DeploymentStatus, frozenset[DeploymentStatus]] = {
    D.REQUESTED: frozenset({D.ACTIVATING, D.FAILED}),
    D.ACTIVATING: frozenset({D.COMMITTED, D.COMPENSATED, D.FAILED}),
    D.COMMITTED: frozenset(),
    D.COMPENSATED: frozenset(),
    D.FAILED: frozenset(),
}
OPEN = (D.REQUESTED.value, D.ACTIVATING.value)

# Reconciliation takes a row over this long after its deadline (clock skew between API hosts).
RECONCILE_GRACE = timedelta(seconds=5)


class DeployRefused(Exception):
    """A request the rules refuse; `code` is the API's problem code."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra
        self.retry_after = retry_after

    def stored(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "extra": self.extra}


class DeadlineExceeded(Exception):
    """The request's deadline passed; `retry_after` is what the platform asked for, if it did."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("deadline exceeded")
        self.retry_after = retry_after


class Platform(Protocol):
    """The WRK Platform client (resources.wrk.WrkPlatformClient) as the saga uses it."""

    retry: Any

    def activate_workflow(self, workflow_id: str, retry: Any = None, timeout: float | None = None) -> Any: ...

    def deactivate_workflow(self, workflow_id: str, retry: Any = None, timeout: float | None = None) -> Any: ...

    def get_workflow(self, workflow_id: str, retry: Any = None, timeout: float | None = None) -> Any: ...


Render = Callable[[Session, models.AutomationVersion], dict[str, Any]]


def render_version(session: Session, version: models.AutomationVersion) -> dict[str, Any]:
    """The version as the API shows it, JSON-safe (stored as an idempotent answer)."""
    return json.loads(json.dumps(version_detail(session, version), default=_iso))  # type: ignore[no-any-return]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


@dataclass(frozen=True)
class Saga:
    """What every caller of the saga provides: the store, the platform client and the policy."""

    engine: Engine
    platform: Platform
    ops_email: str
    deadline_s: float = 30.0
    project_live: bool = True
    slack: bool = False
    render: Render = render_version


@dataclass(frozen=True)
class Hints:
    last_known_status: str | None = None
    last_known_updated_at: datetime | None = None


@dataclass(frozen=True)
class Request:
    """Who asks what, and how: the part of a deploy request that is not its target."""

    actor: Actor
    reason: str | None = None
    notes: str | None = None
    hints: Hints = field(default_factory=Hints)
    invoked_via: str = "api"
    idempotency_key: str | None = None
    request_hash: str | None = None  # of the whole request (path and body), for Idempotency-Key reuse


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    deployment_id: str | None
    replayed: bool = False


@dataclass(frozen=True)
class Route:
    action: str  # deploy | resume | pause | rollback | noop
    version_id: str
    tenant_id: str
    project_id: str
    current_status: str
    workflow_id: str | None
    binding_id: str | None
    previous_live_id: str | None = None

    @property
    def wants_active(self) -> bool:
        return self.action != "pause"


def request_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_hints(version: models.AutomationVersion, hints: Hints) -> None:
    """The client's view of the version (status, updated_at) must still be true."""
    if hints.last_known_status is not None and hints.last_known_status != version.status:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            f"the version is {version.status}, not {hints.last_known_status} as last known",
            current_status=version.status,
        )
    if hints.last_known_updated_at is not None and hints.last_known_updated_at != version.updated_at:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            "the version changed since it was last read",
            current_status=version.status,
            updated_at=version.updated_at.isoformat(),
        )
