"""The saga once planned: the platform call under the request's deadline, the commit, convergence of the
platform with the store, and compensation when anything after the call fails."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from domain.core import counters, lifecycle, models
from domain.core.errors import ExternalServiceError, NotFound, ServiceTimeout
from domain.core.lifecycle import Actor, Status
from domain.core.models import Deployment, DeploymentStatus
from domain.core.store import read_transaction, transaction
from domain.deploy import commit
from domain.deploy.commit import (
    _alert,
    _finish,
    _lock_row,
)
from domain.deploy.saga import (
    OPEN,
    D,
    DeadlineExceeded,
    DeployRefused,
    Hints,
    Outcome,
    Platform,
    Route,
    Saga,
)

log = logging.getLogger(__name__)

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
        commit._move(session, deployment_id, D.ACTIVATING)
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
        audit_id = commit.commit_pause(
            session, plan, hints, actor, row.reason, row.notes, row.invoked_via, saga.ops_email, deployment_id=row.id
        )
        previous_version_id = previous_workflow_id = None
    else:
        live = commit.commit_live(
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
                counters.count(session, "deploy_compensations")
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
