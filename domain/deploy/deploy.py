"""Flow 24 / 24B and rollback: the deploy saga, in one place that the API, the CLI and the
reconciliation job call.

A status change that touches the WRK Platform (deploy, resume, pause, rollback) goes:

1. **plan** (one transaction): route the request by the version's current status, check the
   preconditions and the client's concurrency hints, and record the intent as a `deployments` row
   (`requested`), claiming the Idempotency-Key. Nothing on the platform yet.
2. **activating** (one transaction), then the platform call, bounded by the request's deadline.
3. **commit** (one transaction): re-check under the project lock, make the version Live (previous
   Live archived) or Paused, audit, notify, and mark the row `committed` with the answer.
4. **converge**, before answering: the previous Live version's workflow off, then it and the
   version's own workflow checked against a fresh read of the store until they agree. Another
   request of the project may call the platform between our read and our call, or commit between
   our call and our check; whoever changes either checks again after, so a later commit wins on the
   platform too and, once every request has answered, the platform runs what the store says.
5. Any refusal or failure after step 2 **compensates**: the platform is put back to what the store
   wants, and the row ends `compensated` (or `failed` when the platform call itself failed). A
   compensation that cannot be done is alerted and the row stays `activating` with the reason in
   `error`, for reconciliation.

Past its deadline a request stops calling the platform and never commits: the row belongs to
reconciliation from `deadline_at` on (`reconcile`), which finishes the deploy when the platform did
what was asked and nothing moved meanwhile, and undoes it otherwise. Reconciliation then compares the
platform with the store both ways: every workflow of a Live version active, every other inactive.

Never two Live versions of a project (the partial unique index is the last word); commits of one
project are serialised by locking the project row. No platform call happens inside a transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from domain.core import lifecycle, models, notifications
from domain.core.automation_versions import find_version, version_detail, workflow_binding_of
from domain.core.errors import ExternalServiceError, NotFound, ServiceTimeout
from domain.core.lifecycle import Actor, Status
from domain.core.models import BindingStatus, Deployment, DeploymentStatus, NotificationChannel
from domain.core.store import read_transaction, transaction

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


# ---------------------------------------------------------------------------------------------------
# Plan


def route(session: Session, version: models.AutomationVersion, requested: str) -> Route:
    """Which flow a requested status means for the version's current status."""
    current = Status(version.status)
    table = {
        (Status.LIVE, Status.READY_TO_LAUNCH): "deploy",
        (Status.LIVE, Status.PAUSED): "resume",
        (Status.LIVE, Status.LIVE): "noop",
        (Status.PAUSED, Status.LIVE): "pause",
        (Status.PAUSED, Status.PAUSED): "noop",
    }
    action = table.get((Status(requested), current))
    if action is None:
        raise lifecycle.InvalidStatusTransition("automation_versions", version.id, current, requested)
    return _route(session, version, action)


def _route(session: Session, version: models.AutomationVersion, action: str) -> Route:
    binding = workflow_binding_of(session, version)
    if action in ("deploy", "resume", "rollback") and (
        binding is None or not binding.wrk_workflow_id or binding.status not in DEPLOYABLE_BINDING
    ):
        raise DeployRefused(
            409,
            "precondition_failed",
            f"automation version {version.id} has no deployable workflow binding",
            binding_status=None if binding is None else binding.status,
        )
    live = live_versions(session, version.tenant_id, version.project_id)
    previous = next((v for v in live if v != version.id), None)
    return Route(
        action,
        version.id,
        version.tenant_id,
        version.project_id,
        Status(version.status).value,
        binding.wrk_workflow_id if binding else None,
        binding.id if binding else None,
        previous if action != "pause" else None,
    )


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


def rollback_target(session: Session, project: models.Project, to_version_id: str | None) -> models.AutomationVersion:
    """The version a rollback makes Live: the given Archived one, or the one Live before the current
    one (the most recently archived version that was once deployed)."""
    versions = select(models.AutomationVersion).where(
        models.AutomationVersion.tenant_id == project.tenant_id,
        models.AutomationVersion.project_id == project.id,
    )
    if to_version_id is not None:
        target = session.scalars(versions.where(models.AutomationVersion.id == to_version_id)).one_or_none()
        if target is None:
            raise DeployRefused(404, "not_found", f"automation version {to_version_id} not found in this project")
        if target.status != Status.ARCHIVED.value:
            raise DeployRefused(
                409,
                "invalid_status_transition",
                f"a rollback makes an Archived version Live; version {target.id} is {target.status}",
                current_status=target.status,
                requested_status=Status.LIVE.value,
            )
        return target
    target = session.scalars(
        versions.where(
            models.AutomationVersion.status == Status.ARCHIVED.value,
            models.AutomationVersion.deployed_at.is_not(None),
        ).order_by(models.AutomationVersion.status_changed_at.desc(), models.AutomationVersion.version_number.desc())
    ).first()
    if target is None:
        raise DeployRefused(
            409, "nothing_to_roll_back", f"project {project.id} has no earlier Live version to roll back to"
        )
    return target


def _stored_answer(session: Session, tenant_id: str, request: Request) -> Outcome | None:
    """Idempotency-Key: the stored answer of an earlier request with this key, 409 while it runs."""
    if not request.idempotency_key:
        return None
    row = session.scalars(
        select(Deployment).where(
            Deployment.tenant_id == tenant_id, Deployment.idempotency_key == request.idempotency_key
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request.request_hash:
        raise DeployRefused(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request")
    if row.status in OPEN or row.response_status is None:
        raise DeployRefused(
            409,
            "request_in_progress",
            "a request with this Idempotency-Key is still in progress; retry later",
            retry_after=1,
            deployment_id=row.id,
        )
    body = dict(row.response_body or {})
    if row.response_status >= 400:
        raise DeployRefused(row.response_status, body["code"], body["detail"], **dict(body.get("extra") or {}))
    return Outcome(row.response_status, body, row.id, replayed=True)


def _record(session: Session, plan: Route, request: Request, deadline_s: float) -> str:
    now = datetime.now(UTC)
    row = Deployment(
        tenant_id=plan.tenant_id,
        project_id=plan.project_id,
        automation_version_id=plan.version_id,
        action=plan.action,
        status=D.REQUESTED.value,
        from_status=plan.current_status,
        workflow_id=plan.workflow_id,
        previous_live_version_id=plan.previous_live_id,
        actor_type=request.actor.type,
        actor_id=request.actor.id,
        reason=request.reason,
        notes=request.notes,
        invoked_via=request.invoked_via,
        idempotency_key=request.idempotency_key,
        request_hash=request.request_hash,
        deadline_at=now + timedelta(seconds=deadline_s),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def _plan_and_record(
    saga: Saga, request: Request, load: Callable[[Session], tuple[str, Route | Outcome]]
) -> tuple[Route, str] | Outcome:
    """Run `load` (which finds the target and plans) with the idempotency check and the intent row in
    one transaction; a concurrent request with the same key gets its answer or `request_in_progress`."""
    tenant_id: str | None = None
    try:
        with transaction(saga.engine) as session:
            tenant_id, planned = load(session)
            if isinstance(planned, Outcome):
                return planned
            return planned, _record(session, planned, request, saga.deadline_s)
    except IntegrityError:
        # The same key raced us (PostgreSQL: its insert committed while ours waited on it).
        if tenant_id is None or not request.idempotency_key:
            raise
        with transaction(saga.engine) as session:
            stored = _stored_answer(session, tenant_id, request)
        if stored is None:
            raise
        return stored


def change_status(saga: Saga, tenants: frozenset[str], version_id: str, requested: str, request: Request) -> Outcome:
    """`PATCH /v1/automation-versions/{id}/status`: deploy, resume or pause (or the idempotent no-op)."""

    def load(session: Session) -> tuple[str, Route | Outcome]:
        version = find_version(session, tenants, version_id)
        if version is None:
            raise DeployRefused(404, "not_found", f"automation version {version_id} not found")
        stored = _stored_answer(session, version.tenant_id, request)
        if stored is not None:
            return version.tenant_id, stored
        plan = route(session, version, requested)
        check_hints(version, request.hints)  # before any platform call, whatever the action
        if plan.action == "noop":
            return version.tenant_id, Outcome(200, saga.render(session, version), None)
        return version.tenant_id, plan

    planned = _plan_and_record(saga, request, load)
    if isinstance(planned, Outcome):
        return planned
    return _run(saga, *planned)


def rollback(
    saga: Saga, tenants: frozenset[str], project_id: str, to_version_id: str | None, request: Request
) -> Outcome:
    """`POST /v1/projects/{id}/rollback`: the previous Live version (or the given Archived one) Live
    again through the same saga; the current Live version is archived."""

    def load(session: Session) -> tuple[str, Route | Outcome]:
        project = session.scalars(
            select(models.Project).where(models.Project.id == project_id, models.Project.tenant_id.in_(list(tenants)))
        ).one_or_none()
        if project is None:
            raise DeployRefused(404, "not_found", f"project {project_id} not found")
        stored = _stored_answer(session, project.tenant_id, request)
        if stored is not None:
            return project.tenant_id, stored
        target = rollback_target(session, project, to_version_id)
        return project.tenant_id, _route(session, target, "rollback")

    planned = _plan_and_record(saga, request, load)
    if isinstance(planned, Outcome):
        return planned
    return _run(saga, *planned)


# ---------------------------------------------------------------------------------------------------
# Platform calls under a deadline


class _Clock:
    def __init__(self, deadline_s: float) -> None:
        self.deadline = time.monotonic() + deadline_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def sleep(self, seconds: float) -> None:
        """The retry policy's wait, refused when it would end past the deadline."""
        if time.monotonic() + seconds >= self.deadline:
            raise DeadlineExceeded(seconds)
        time.sleep(seconds)


def _set_active(platform: Platform, workflow_id: str, active: bool, clock: _Clock) -> bool | None:
    """The call; returns the workflow's state as the platform answered it (None: not known)."""
    if clock.remaining() <= 0:
        raise DeadlineExceeded()
    call = platform.activate_workflow if active else platform.deactivate_workflow
    try:
        answer = call(workflow_id, retry=platform.retry.override(sleep=clock.sleep), timeout=clock.remaining())
    except ServiceTimeout as exc:
        if clock.remaining() <= 0:
            raise DeadlineExceeded() from exc
        raise
    answered = getattr(answer, "active", None)
    return None if answered is None else bool(answered)


def _is_active(platform: Platform, workflow_id: str, clock: _Clock) -> bool | None:
    """The platform's view; None when the workflow does not exist."""
    if clock.remaining() <= 0:
        raise DeadlineExceeded()
    try:
        workflow = platform.get_workflow(
            workflow_id, retry=platform.retry.override(sleep=clock.sleep), timeout=clock.remaining()
        )
    except NotFound:
        return None
    return bool(workflow.active)


# ---------------------------------------------------------------------------------------------------
# The saga


def _run(saga: Saga, plan: Route, deployment_id: str) -> Outcome:
    clock = _Clock(saga.deadline_s)
    with transaction(saga.engine) as session:
        _move(session, deployment_id, D.ACTIVATING)
    assert plan.workflow_id is not None
    verb = "activate" if plan.wants_active else "deactivate"
    try:
        answered = _set_active(saga.platform, plan.workflow_id, plan.wants_active, clock)
    except DeadlineExceeded as exc:
        raise _past_deadline(saga, plan, deployment_id, exc) from exc
    except ExternalServiceError as exc:
        _alert(
            saga,
            plan.tenant_id,
            f"{plan.action} of automation version {plan.version_id} failed on the WRK Platform",
            f"{exc}\nWorkflow: {plan.workflow_id}\nDeployment: {deployment_id}",
            f"{plan.action}_failed:{deployment_id}",
        )
        refused = DeployRefused(
            502,
            "deployment_failed",
            f"the WRK Platform did not confirm the {plan.action}: {exc}",
            status_unchanged=plan.current_status,
            deployment_id=deployment_id,
        )
        # A timed-out call may have happened: put the platform back if it did.
        _compensate(saga, plan, deployment_id, clock, refused, D.FAILED, f"{verb}_failed")
        raise refused from exc
    try:
        with transaction(saga.engine) as session:
            row = _lock_row(session, deployment_id)
            if row.status != D.ACTIVATING.value or datetime.now(UTC) >= row.deadline_at:
                # Past the deadline the row is reconciliation's: never commit behind its back.
                raise DeadlineExceeded()
            committed = _commit(saga, session, plan, row)
    except DeadlineExceeded as exc:
        raise _past_deadline(saga, plan, deployment_id, exc) from exc
    except (DeployRefused, lifecycle.InvalidStatusTransition) as exc:
        refused = (
            exc
            if isinstance(exc, DeployRefused)
            else DeployRefused(
                409,
                "invalid_status_transition",
                str(exc),
                current_status=str(exc.current),
                requested_status=str(exc.requested),
            )
        )
        _compensate(saga, plan, deployment_id, clock, refused, D.COMPENSATED, "refused")
        raise refused from exc
    except IntegrityError as exc:
        refused = DeployRefused(409, "concurrency_conflict", "another deploy of this project won the race")
        _compensate(saga, plan, deployment_id, clock, refused, D.COMPENSATED, "refused")
        raise refused from exc
    except SQLAlchemyError as exc:
        log.exception("deployment %s: the commit failed", deployment_id)
        refused = DeployRefused(500, "deployment_failed", "the deploy could not be recorded; nothing changed")
        _compensate(saga, plan, deployment_id, clock, refused, D.COMPENSATED, "commit_failed")
        raise refused from exc
    _after_commit(saga, plan, committed, clock, answered)
    return Outcome(200, committed.body, deployment_id)


def _past_deadline(saga: Saga, plan: Route, deployment_id: str, exc: DeadlineExceeded) -> DeployRefused:
    """The row stays open (activating) and says what to finish; reconciliation owns it from its
    deadline on. The client is told when to come back."""
    retry_after = max(1, math.ceil(exc.retry_after if exc.retry_after is not None else saga.deadline_s))
    try:
        with transaction(saga.engine) as session:
            row = _lock_row(session, deployment_id)
            if row.status in OPEN:
                row.error = {"code": "deadline_exceeded", "at": datetime.now(UTC).isoformat()}
    except SQLAlchemyError:
        log.exception("deployment %s: could not note the deadline", deployment_id)
    return DeployRefused(
        503,
        "deadline_exceeded",
        f"the WRK Platform did not complete the {plan.action} within {saga.deadline_s:g} s; "
        "the deployment will be finished or undone by reconciliation",
        retry_after=retry_after,
        deployment_id=deployment_id,
    )


@dataclass(frozen=True)
class _Committed:
    previous_version_id: str | None
    previous_workflow_id: str | None
    audit_id: int
    body: dict[str, Any]


def _commit(saga: Saga, session: Session, plan: Route, row: Deployment) -> _Committed:
    hints = Hints()  # checked at plan time; the version must not have moved since (re-checked below)
    actor = Actor(row.actor_type, row.actor_id)
    if plan.action == "pause":
        audit_id = commit_pause(session, plan, hints, actor, row.reason, row.notes, row.invoked_via, saga.ops_email)
        previous_version_id = previous_workflow_id = None
    else:
        live = commit_live(
            session,
            plan,
            hints,
            actor,
            row.reason,
            row.invoked_via,
            saga.project_live,
            saga.ops_email,
            slack=saga.slack,
            notes=row.notes,
            deployment_id=row.id,
        )
        audit_id, previous_version_id, previous_workflow_id = (
            live.audit_id,
            live.previous_live_id,
            live.previous_workflow_id,
        )
    # The answer is read inside the commit: the version is the one the commit locked and changed (the
    # session's identity map holds it; flushed, so the render reads what the commit wrote).
    session.flush()
    version = session.get(models.AutomationVersion, plan.version_id)
    assert version is not None and version.tenant_id == plan.tenant_id
    body = saga.render(session, version)
    _finish(session, row, D.COMMITTED, 200, body)
    return _Committed(previous_version_id, previous_workflow_id, audit_id, body)


def _after_commit(saga: Saga, plan: Route, committed: _Committed, clock: _Clock, active: bool | None) -> None:
    """The previous Live version's workflow off the platform, then both workflows the commit changed
    made to agree with the store again before the answer: a request of the same project that
    committed meanwhile may have called the platform before or after us (a deploy's deactivation
    landing after a rollback made that version Live again), and a later commit wins. `active`: the
    version's workflow as the platform last answered this request, before the commit (the commit does
    not change what the store wants for it: the open row wanted the same). The commit stands if this
    fails: ops are alerted and reconciliation finishes it."""
    assert plan.workflow_id is not None
    workflows = {plan.version_id: plan.workflow_id}
    answered = {plan.workflow_id: active}
    previous = committed.previous_workflow_id
    try:
        if previous and committed.previous_version_id and previous != plan.workflow_id:
            answered[previous] = _set_active(saga.platform, previous, False, clock)
            workflows[committed.previous_version_id] = previous
        converge(saga, plan.tenant_id, workflows, clock, active=answered)
    except (ExternalServiceError, DeadlineExceeded, SQLAlchemyError) as exc:
        _alert(
            saga,
            plan.tenant_id,
            f"HIGH: the WRK Platform may disagree with the store after a {plan.action}",
            f"{exc!r}\nWorkflows: {previous or '-'} (previous, to deactivate), {plan.workflow_id}\n"
            "The reconcile_deployments job will set them as the store wants.",
            f"deactivate_failed:{committed.audit_id}",
        )


def _compensate(
    saga: Saga,
    plan: Route,
    deployment_id: str,
    clock: _Clock,
    refused: DeployRefused,
    end: DeploymentStatus,
    why: str,
) -> None:
    """Put the platform back to what the store wants for this workflow, then end the row with the
    answer. If the platform cannot be put back, alert and leave the row open for reconciliation."""
    assert plan.workflow_id is not None
    try:
        restore_platform(saga, plan.tenant_id, plan.version_id, plan.workflow_id, clock, exclude=deployment_id)
    except (ExternalServiceError, DeadlineExceeded, SQLAlchemyError) as exc:
        _alert(
            saga,
            plan.tenant_id,
            f"HIGH: could not undo a refused {plan.action} of automation version {plan.version_id}",
            f"{exc!r}\nWorkflow: {plan.workflow_id}\nDeployment: {deployment_id} (left for reconcile_deployments)",
            f"compensation_failed:{deployment_id}",
        )
        try:
            with transaction(saga.engine) as session:
                row = _lock_row(session, deployment_id)
                if row.status in OPEN:
                    # The client was refused: reconciliation must undo this one, never finish it.
                    row.error = {
                        "code": refused.code,
                        "why": why,
                        "compensation": "failed",
                        "detail": repr(exc),
                        "answer": {"status": refused.status, **refused.stored()},
                    }
        except SQLAlchemyError:
            log.exception("deployment %s: could not record the failed compensation", deployment_id)
        return
    try:
        with transaction(saga.engine) as session:
            row = _lock_row(session, deployment_id)
            if row.status in OPEN:
                row.error = {"code": refused.code, "why": why, "detail": refused.detail, "compensation": "done"}
                _finish(session, row, end, refused.status, refused.stored())
    except SQLAlchemyError:
        # The store is down: the row stays open and reconciliation ends it (the platform is right).
        log.exception("deployment %s: could not record the compensation", deployment_id)


def wanted_active(
    session: Session, tenant_id: str, version_ids: list[str], exclude: str | None = None
) -> dict[str, bool]:
    """Whether the store wants each version's workflow active: the latest other open deployment of
    the version decides (its own compensation corrects it later), else the version being Live."""
    open_rows = session.execute(
        select(Deployment.automation_version_id, Deployment.action)
        .where(
            Deployment.tenant_id == tenant_id,
            Deployment.automation_version_id.in_(version_ids),
            Deployment.status.in_(OPEN),
            Deployment.id != (exclude or ""),
        )
        .order_by(Deployment.created_at)
    ).all()
    by_open_row = {version_id: action != "pause" for version_id, action in open_rows}  # the latest last
    statuses = session.execute(
        select(models.AutomationVersion.id, models.AutomationVersion.status).where(
            models.AutomationVersion.tenant_id == tenant_id, models.AutomationVersion.id.in_(version_ids)
        )
    ).all()
    return {version_id: by_open_row.get(version_id, status == Status.LIVE.value) for version_id, status in statuses}


def converge(
    saga: Saga,
    tenant_id: str,
    workflows: dict[str, str],
    clock: _Clock,
    exclude: str | None = None,
    active: dict[str, bool | None] | None = None,
) -> dict[str, str]:
    """Make the platform agree with the store for some workflows of a tenant (version id -> workflow
    id), each until a read of the store made after the platform's last change agrees with it: a
    concurrent request of the project may commit, or its call land, between our read and our call.
    Whoever changes the platform or the store checks again after it, so once every request has
    answered the last check saw the last state of both. Bounded by the clock. `active`: a workflow's
    state as the caller's last platform call answered it, made after the caller's last change of what
    the store wants for it (saves a read). Returns what was done per workflow id."""
    known = dict(active or {})
    pending = dict(workflows)
    done: dict[str, str] = {}
    while pending:
        with read_transaction(saga.engine) as session:
            wanted = wanted_active(session, tenant_id, list(pending), exclude)
        for version_id, workflow_id in list(pending.items()):
            state = known.get(workflow_id)
            if state is None:
                state = _is_active(saga.platform, workflow_id, clock)
            if state is None and wanted[version_id]:
                raise NotFound("wrk_platform", f"workflow {workflow_id} of a Live version does not exist")
            if state is None or state == wanted[version_id]:
                del pending[version_id]
                continue
            known[workflow_id] = _set_active(saga.platform, workflow_id, wanted[version_id], clock)
            done[workflow_id] = "activated" if wanted[version_id] else "deactivated"
    return done


def restore_platform(
    saga: Saga, tenant_id: str, version_id: str, workflow_id: str, clock: _Clock, exclude: str | None = None
) -> str | None:
    """`converge` for one workflow; returns what was done."""
    return converge(saga, tenant_id, {version_id: workflow_id}, clock, exclude).get(workflow_id)


# ---------------------------------------------------------------------------------------------------
# Commits (inside the caller's transaction)


def _lock(session: Session, plan: Route) -> tuple[models.Project, models.AutomationVersion]:
    # The project row first: every deploy of a project queues here, so they run one at a time.
    project = session.scalars(
        select(models.Project)
        .where(
            models.Project.tenant_id == plan.tenant_id,
            models.Project.id == plan.project_id,
        )
        .with_for_update()
    ).one()
    version = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == plan.tenant_id,
            models.AutomationVersion.id == plan.version_id,
        )
        .with_for_update()
    ).one()
    return project, version


def _lock_row(session: Session, deployment_id: str) -> Deployment:
    return session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()).one()


def _move(session: Session, deployment_id: str, to: DeploymentStatus) -> None:
    """One guarded statement (one round trip): the row moves only from a status the table allows."""
    allowed_from = [s.value for s, moves in DEPLOYMENT_TRANSITIONS.items() if to in moves]
    moved = session.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.status.in_(allowed_from))
        .values(status=to.value)
        .returning(Deployment.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if moved is None:
        status = session.scalar(select(Deployment.status).where(Deployment.id == deployment_id))
        raise RuntimeError(f"deployment {deployment_id}: {status} cannot move to {to.value}")


def _finish(session: Session, row: Deployment, to: DeploymentStatus, status: int, body: dict[str, Any]) -> None:
    """`row` is locked by the caller's transaction (_lock_row): the move is checked on it and written
    with the answer in one UPDATE."""
    if to not in DEPLOYMENT_TRANSITIONS[DeploymentStatus(row.status)]:
        raise RuntimeError(f"deployment {row.id}: {row.status} cannot move to {to.value}")
    row.status = to.value
    row.response_status, row.response_body, row.finished_at = status, body, datetime.now(UTC)


def _check_unchanged(version: models.AutomationVersion, plan: Route, hints: Hints) -> None:
    check_hints(version, hints)
    if version.status != plan.current_status:
        raise DeployRefused(
            409,
            "concurrency_conflict",
            f"the version moved to {version.status} while the request was handled",
            current_status=version.status,
        )


@dataclass(frozen=True)
class Committed:
    previous_live_id: str | None
    previous_workflow_id: str | None
    audit_id: int


def commit_live(
    session: Session,
    plan: Route,
    hints: Hints,
    actor: Actor,
    reason: str | None,
    invoked_via: str,
    project_live: bool,
    ops_email: str,
    slack: bool = False,
    notes: str | None = None,
    deployment_id: str | None = None,
) -> Committed:
    """Deploy, resume or rollback, after the platform activated the workflow: the version Live, the
    previous Live version Archived with its binding inactive, the project Live (by policy), audit and
    notifications."""
    project, version = _lock(session, plan)
    _check_unchanged(version, plan, hints)
    now = datetime.now(UTC)
    previous = session.scalars(
        select(models.AutomationVersion)
        .where(
            models.AutomationVersion.tenant_id == plan.tenant_id,
            models.AutomationVersion.project_id == plan.project_id,
            models.AutomationVersion.status == Status.LIVE.value,
            models.AutomationVersion.id != plan.version_id,
        )
        .with_for_update()
    ).one_or_none()
    previous_binding = workflow_binding_of(session, previous) if previous is not None else None
    if previous is not None:
        lifecycle.transition(
            session,
            previous,
            Status.ARCHIVED,
            actor=actor,
            action="archive",
            reason=f"superseded by version {version.version_number}"
            + (" (rollback)" if plan.action == "rollback" else ""),
            metadata={"superseded_by": version.id, "deployment_id": deployment_id},
        )
        if previous_binding is not None:
            lifecycle.transition_binding(
                session, previous_binding, BindingStatus.INACTIVE, actor=actor, reason=f"version {previous.id} archived"
            )
        session.flush()  # the old Live row leaves the one-Live index before the new one enters it
    binding = workflow_binding_of(session, version)
    assert binding is not None
    lifecycle.transition_binding(
        session, binding, BindingStatus.ACTIVE, actor=actor, reason=f"version {version.id} live"
    )
    version.deployed_at, version.deployed_by, version.deployment_reason = now, actor.id, reason
    version.deployment_metadata = {
        "invoked_via": invoked_via,
        "workflow_id": binding.wrk_workflow_id,
        "action": plan.action,
        "deployment_id": deployment_id,
    }
    entry = lifecycle.transition(
        session,
        version,
        Status.LIVE,
        actor=actor,
        action=plan.action,
        reason=reason,
        metadata={
            "previous_live_version_id": previous.id if previous else None,
            "previous_live_status": Status.ARCHIVED.value if previous else None,
            "binding_id": binding.id,
            "previous_binding_id": previous_binding.id if previous_binding else None,
            "deployment_reason": reason,
            "notes": notes,
            "invoked_via": invoked_via,
            "deployment_id": deployment_id,
        },
    )
    if project_live and Status(project.status) is not Status.LIVE and lifecycle.allowed(project, Status.LIVE):
        lifecycle.transition(
            session,
            project,
            Status.LIVE,
            actor=actor,
            action=plan.action,
            reason=f"version {version.version_number} is live",
        )
    session.flush()
    _notify_live(session, project, version, actor, reason, ops_email, entry.id, slack, plan.action)
    return Committed(
        previous.id if previous else None, previous_binding.wrk_workflow_id if previous_binding else None, entry.id
    )


def commit_pause(
    session: Session,
    plan: Route,
    hints: Hints,
    actor: Actor,
    reason: str | None,
    notes: str | None,
    invoked_via: str,
    ops_email: str,
    deployment_id: str | None = None,
) -> int:
    """After the platform deactivated the workflow: the version Paused (binding stays the version's)."""
    project, version = _lock(session, plan)
    _check_unchanged(version, plan, hints)
    entry = lifecycle.transition(
        session,
        version,
        Status.PAUSED,
        actor=actor,
        action="pause",
        reason=reason,
        metadata={
            "invoked_via": invoked_via,
            "binding_id": plan.binding_id,
            "deployment_reason": reason,
            "notes": notes,
            "deployment_id": deployment_id,
        },
    )
    session.flush()
    key = f"automation_paused:{entry.id}"
    notifications.notify_all(
        session,
        tenant_id=version.tenant_id,
        payload=_payload(project, version, actor, reason),
        messages=[
            (NotificationChannel.EMAIL, "automation_paused", ops_email, key),
            (NotificationChannel.EMAIL, "automation_paused", project.client_email, f"{key}:client"),
        ],
    )
    return entry.id


def _payload(
    project: models.Project, version: models.AutomationVersion, actor: Actor, reason: str | None
) -> dict[str, Any]:
    return {
        "project_name": project.name,
        "version_number": version.version_number,
        "automation_version_id": version.id,
        "actor": actor.id,
        "reason": reason or "-",
    }


# The deployment e-mail's words per action that makes a version Live (its subject, then its sentence).
LIVE_ACTION_WORDS: dict[str, tuple[str, str]] = {
    "deploy": ("Deployed", "deployed"),
    "resume": ("Resumed", "resumed"),
    "rollback": ("Rolled back", "rolled back to"),
}


def _notify_live(
    session: Session,
    project: models.Project,
    version: models.AutomationVersion,
    actor: Actor,
    reason: str | None,
    ops_email: str,
    audit_id: int,
    slack: bool,
    action: str,
) -> None:
    key = f"{version.id}:{audit_id}"
    collaborators = session.scalars(
        select(models.ProjectCollaborator.user_id).where(
            models.ProjectCollaborator.tenant_id == project.tenant_id,
            models.ProjectCollaborator.project_id == project.id,
        )
    ).all()
    messages: list[notifications.Message] = [
        (NotificationChannel.EMAIL, "automation_live", project.client_email, f"automation_live:{key}"),
        (NotificationChannel.EMAIL, "deployment_success", ops_email, f"deployment_success:{key}"),
        *(
            (NotificationChannel.IN_APP, "automation_live", user_id, f"automation_live_in_app:{key}:{user_id}")
            for user_id in collaborators
        ),
    ]
    if slack:
        messages.append((NotificationChannel.SLACK, "deployment_success", "slack", f"deployment_success_slack:{key}"))
    title, done = LIVE_ACTION_WORDS.get(action, LIVE_ACTION_WORDS["deploy"])
    payload = {**_payload(project, version, actor, reason), "action_title": title, "action_done": done}
    notifications.notify_all(session, tenant_id=version.tenant_id, payload=payload, messages=messages)


def live_versions(session: Session, tenant_id: str, project_id: str) -> list[str]:
    return list(
        session.scalars(
            select(models.AutomationVersion.id).where(
                models.AutomationVersion.tenant_id == tenant_id,
                models.AutomationVersion.project_id == project_id,
                models.AutomationVersion.status == Status.LIVE.value,
            )
        )
    )


def _alert(saga: Saga, tenant_id: str | None, summary: str, details: str, key: str) -> None:
    try:
        with transaction(saga.engine) as session:
            notifications.ops_alert(
                session,
                saga.ops_email,
                summary=summary,
                details=details,
                dedup_key=f"{key}:{hashlib.sha1(details.encode()).hexdigest()[:12]}",
                tenant_id=tenant_id,
            )
    except SQLAlchemyError:
        log.exception("could not record an ops alert: %s", summary)


# ---------------------------------------------------------------------------------------------------
# Reconciliation


@dataclass
class Reconciliation:
    finished: list[str] = field(default_factory=list)  # deployment ids committed by reconciliation
    undone: list[str] = field(default_factory=list)  # deployment ids compensated or failed
    activated: list[str] = field(default_factory=list)  # workflow ids
    deactivated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # deployments or workflows it could not settle
    checked: int = 0

    @property
    def acted(self) -> bool:
        return bool(self.finished or self.undone or self.activated or self.deactivated or self.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "undone": self.undone,
            "activated": self.activated,
            "deactivated": self.deactivated,
            "failed": self.failed,
            "checked": self.checked,
        }


def reconcile(saga: Saga, now: datetime | None = None) -> Reconciliation:
    """Finish or undo every deployment whose request gave up or died (open past its deadline), then
    make the platform run exactly the workflows of Live versions. Audits each act; alerts ops when it
    had to act. Safe to run at any time, also while requests are served: it leaves in-flight
    deployments alone and re-reads the store after each platform change."""
    now = now or datetime.now(UTC)
    report = Reconciliation()
    with transaction(saga.engine) as session:
        stale = list(
            session.scalars(
                select(Deployment.id)
                .where(Deployment.status.in_(OPEN), Deployment.deadline_at <= now - RECONCILE_GRACE)
                .order_by(Deployment.created_at)
            )
        )
    for deployment_id in stale:
        try:
            _settle(saga, deployment_id, report)
        except (ExternalServiceError, DeadlineExceeded, SQLAlchemyError) as exc:
            log.warning("deployment %s could not be reconciled: %r", deployment_id, exc)
            report.failed.append(deployment_id)
    _sweep(saga, report)
    if report.acted:
        _alert(
            saga,
            None,
            "Deploy reconciliation had to act" + (" (and could not settle everything)" if report.failed else ""),
            json.dumps(report.as_dict(), indent=2),
            "deploy_reconciliation",
        )
    return report


def _settle(saga: Saga, deployment_id: str, report: Reconciliation) -> None:
    clock = _Clock(saga.deadline_s)
    reconciler = Actor.system("reconciliation")
    with transaction(saga.engine) as session:
        row = _lock_row(session, deployment_id)
        if row.status not in OPEN:
            return
        if row.status == D.REQUESTED.value:
            # Died before `activating` was committed: the platform was never called.
            row.error = {"code": "interrupted", "detail": "the request ended before the platform was called"}
            _finish(session, row, D.FAILED, 502, _interrupted(row).stored())
            _audit(session, row, reconciler, "deployment_failed")
            report.undone.append(row.id)
            return
        plan = Route(
            row.action,
            row.automation_version_id,
            row.tenant_id,
            row.project_id,
            row.from_status,
            row.workflow_id,
            None,
            row.previous_live_version_id,
        )
    assert plan.workflow_id is not None
    refused_already = (row.error or {}).get("answer")
    active = _is_active(saga.platform, plan.workflow_id, clock)
    committed: _Committed | None = None
    if active == plan.wants_active and refused_already is None:
        # The platform did what was asked: finish it, if nothing moved in the store meanwhile.
        try:
            with transaction(saga.engine) as session:
                row = _lock_row(session, deployment_id)
                if row.status not in OPEN:
                    return
                if plan.action != "pause" and live_versions(session, plan.tenant_id, plan.project_id) != (
                    [plan.previous_live_id] if plan.previous_live_id else []
                ):
                    raise DeployRefused(409, "concurrency_conflict", "the project's Live version changed meanwhile")
                row.invoked_via = f"{row.invoked_via}+reconciliation"
                committed = _commit(saga, session, plan, row)
                _audit(session, row, reconciler, "deployment_finished")
        except (DeployRefused, lifecycle.InvalidStatusTransition, IntegrityError):
            committed = None
    if committed is not None:
        report.finished.append(deployment_id)
        _after_commit(saga, plan, committed, clock, active)
        return
    # Undo: the store did not move; the platform follows it.
    restore_platform(saga, plan.tenant_id, plan.version_id, plan.workflow_id, clock, exclude=deployment_id)
    with transaction(saga.engine) as session:
        row = _lock_row(session, deployment_id)
        if row.status not in OPEN:
            return
        answer = dict((row.error or {}).get("answer") or {})
        status = int(answer.pop("status", 0)) or 502
        row.error = {**(row.error or {}), "reconciled": "undone"}
        _finish(session, row, D.COMPENSATED, status, answer or _interrupted(row).stored())
        _audit(session, row, reconciler, "deployment_compensated")
    report.undone.append(deployment_id)


def _interrupted(row: Deployment) -> DeployRefused:
    return DeployRefused(
        502,
        "deployment_failed",
        f"the {row.action} was interrupted and undone by reconciliation; the version stayed {row.from_status}",
        status_unchanged=row.from_status,
        deployment_id=row.id,
    )


def _audit(session: Session, row: Deployment, actor: Actor, action: str) -> None:
    lifecycle.record(
        session,
        tenant_id=row.tenant_id,
        entity_type="deployments",
        entity_id=row.id,
        action=action,
        actor=actor,
        reason=row.reason,
        metadata={
            "automation_version_id": row.automation_version_id,
            "deployment_action": row.action,
            "workflow_id": row.workflow_id,
            "requested_by": row.actor_id,
            "error": row.error,
        },
    )


def _sweep(saga: Saga, report: Reconciliation) -> None:
    """Every bound workflow: active on the platform exactly when its version is Live. Versions with a
    deployment in flight are its business, not ours."""
    with transaction(saga.engine) as session:
        rows = session.execute(
            select(
                models.WorkflowBinding.id,
                models.WorkflowBinding.tenant_id,
                models.WorkflowBinding.wrk_workflow_id,
                models.AutomationVersion.id,
            )
            .join(
                models.AutomationVersion,
                (models.AutomationVersion.tenant_id == models.WorkflowBinding.tenant_id)
                & (models.AutomationVersion.id == models.WorkflowBinding.automation_version_id),
            )
            .where(models.WorkflowBinding.wrk_workflow_id.is_not(None))
            .order_by(models.WorkflowBinding.created_at)
        ).all()
    report.checked = len(rows)
    for binding_id, tenant_id, workflow_id, version_id in rows:
        clock = _Clock(saga.deadline_s)
        with transaction(saga.engine) as session:
            in_flight = session.scalar(
                select(Deployment.id).where(
                    Deployment.tenant_id == tenant_id,
                    Deployment.automation_version_id == version_id,
                    Deployment.status.in_(OPEN),
                )
            )
        if in_flight is not None:
            continue
        try:
            done = restore_platform(saga, tenant_id, version_id, workflow_id, clock)
        except (ExternalServiceError, DeadlineExceeded) as exc:
            log.warning("workflow %s could not be reconciled: %r", workflow_id, exc)
            report.failed.append(workflow_id)
            continue
        if done is None:
            continue
        (report.activated if done == "activated" else report.deactivated).append(workflow_id)
        with transaction(saga.engine) as session:
            lifecycle.record(
                session,
                tenant_id=tenant_id,
                entity_type="workflow_bindings",
                entity_id=binding_id,
                action=f"workflow_{done}",
                actor=Actor.system("reconciliation"),
                metadata={"workflow_id": workflow_id, "automation_version_id": version_id},
            )
