"""Flow 24 / 24B over HTTP: `PATCH /v1/automation-versions/{id}/status` deploys, resumes or pauses."""

import contextlib
import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require, tenant_scope
from api.openapi import Endpoint
from api.problems import Problem
from api.requests import engine, json_body
from api.routes.automation_versions import AutomationVersionOut, not_found
from domain import deploy, notifications
from domain.automation_versions import find_version, version_detail
from domain.lifecycle import Actor
from domain.models import IdempotencyKey
from domain.settings import Settings
from domain.store import transaction
from resources.errors import ExternalServiceError
from resources.wrk import WrkPlatformClient


class StatusChange(BaseModel):
    status: Literal["Live", "Paused"]
    last_known_status: str | None = None
    last_known_updated_at: datetime | None = None
    deployment_reason: str | None = Field(default=None, max_length=2000)


async def change_status(request: Request) -> JSONResponse:
    principal = require(request, OPS_ROLES)
    tenants = tenant_scope(request, principal)
    version_id = request.path_params["version_id"]
    change = await json_body(request, StatusChange)
    key = request.headers.get("idempotency-key")
    body_hash = hashlib.sha256(json.dumps(change.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    settings: Settings = request.app.state.settings
    wrk: WrkPlatformClient = request.app.state.wrk
    scope = f"PATCH /v1/automation-versions/{version_id}/status"
    actor = Actor.user(principal.sub)
    db = engine(request)

    def handle() -> tuple[int, dict[str, Any]]:
        with transaction(db) as session:
            version = find_version(session, tenants, version_id)
            if version is None:
                raise not_found(version_id)
            tenant_id = version.tenant_id
            if key:
                stored = _stored(session, tenant_id, scope, key)
                if stored is not None:
                    if stored.request_hash != body_hash:
                        raise Problem(
                            422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
                        )
                    return stored.response_status, dict(stored.response_body)
            plan = deploy.route(session, version, change.status)
            hints = deploy.Hints(change.last_known_status, change.last_known_updated_at)
            if plan.action == "noop":
                deploy.check_hints(version, hints)
        if plan.action == "noop":
            return _answer(db, tenant_id, key, scope, body_hash, 200, _detail(db, tenants, version_id))
        # The platform first: nothing is Live (or Paused) that the platform did not confirm.
        try:
            if plan.action == "pause":
                wrk.deactivate_workflow(plan.workflow_id or "")
            else:
                wrk.activate_workflow(plan.workflow_id or "")
        except ExternalServiceError as exc:
            _alert(
                db,
                settings,
                tenant_id,
                f"{plan.action} of automation version {version_id} failed on the WRK Platform",
                f"{exc}\nWorkflow: {plan.workflow_id}\nActor: {actor.id}",
                f"{plan.action}_failed",
            )
            raise Problem(
                502,
                "deployment_failed",
                f"the WRK Platform did not confirm the {plan.action}: {exc}",
                extra={"status_unchanged": plan.current_status},
            ) from exc
        try:
            with transaction(db) as session:
                if plan.action == "pause":
                    deploy.commit_pause(
                        session, plan, hints, actor, change.deployment_reason, "api", settings.ops_email
                    )
                    committed = None
                else:
                    committed = deploy.commit_live(
                        session,
                        plan,
                        hints,
                        actor,
                        change.deployment_reason,
                        "api",
                        settings.project_live_on_deploy,
                        settings.ops_email,
                        slack=bool(settings.slack_webhook_url),
                    )
                body = _detail_in(session, tenants, version_id)
                if key:
                    session.add(
                        IdempotencyKey(
                            tenant_id=tenant_id,
                            scope=scope,
                            key=key,
                            request_hash=body_hash,
                            response_status=200,
                            response_body=body,
                        )
                    )
        except deploy.DeployRefused as refused:
            _compensate(db, wrk, plan)
            raise Problem(refused.status, refused.code, refused.detail, extra=refused.extra) from refused
        except IntegrityError as exc:
            _compensate(db, wrk, plan)
            if key:  # the same key raced us: replay what the winner stored
                with transaction(db) as session:
                    stored = _stored(session, tenant_id, scope, key)
                if stored is not None and stored.request_hash == body_hash:
                    return stored.response_status, dict(stored.response_body)
            raise Problem(409, "concurrency_conflict", "another deploy of this project won the race") from exc
        except SQLAlchemyError as exc:
            _compensate(db, wrk, plan)
            raise Problem(500, "deployment_failed", "the deploy could not be recorded; nothing changed") from exc
        if (
            committed is not None
            and committed.previous_workflow_id
            and committed.previous_workflow_id != plan.workflow_id
        ):
            try:
                wrk.deactivate_workflow(committed.previous_workflow_id)
            except ExternalServiceError as exc:
                _alert(
                    db,
                    settings,
                    tenant_id,
                    f"HIGH: previous workflow {committed.previous_workflow_id} is still active after a deploy",
                    f"{exc}\nThe reconcile_platform_workflows job will deactivate it.",
                    f"deactivate_failed:{committed.audit_id}",
                )
        return 200, body

    status, body = await run_in_threadpool(handle)
    return JSONResponse(body, status_code=status)


def _stored(session: Any, tenant_id: str, scope: str, key: str) -> IdempotencyKey | None:
    return session.scalars(
        select(IdempotencyKey).where(
            IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
    ).one_or_none()


def _detail_in(session: Any, tenants: frozenset[str], version_id: str) -> dict[str, Any]:
    version = find_version(session, tenants, version_id)
    assert version is not None
    return AutomationVersionOut.model_validate(version_detail(session, version)).model_dump(mode="json")


def _detail(db: Any, tenants: frozenset[str], version_id: str) -> dict[str, Any]:
    with transaction(db) as session:
        return _detail_in(session, tenants, version_id)


def _answer(
    db: Any, tenant_id: str, key: str | None, scope: str, body_hash: str, status: int, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    if key:
        try:
            with transaction(db) as session:
                session.add(
                    IdempotencyKey(
                        tenant_id=tenant_id,
                        scope=scope,
                        key=key,
                        request_hash=body_hash,
                        response_status=status,
                        response_body=body,
                    )
                )
        except IntegrityError:
            pass  # stored by a concurrent request with the same key: same answer
    return status, body


def _compensate(db: Any, wrk: WrkPlatformClient, plan: deploy.Route) -> None:
    """A deploy that activated the workflow but could not commit leaves the platform as it found it,
    unless a concurrent request made that very version Live meanwhile. If this fails, the
    reconciliation job deactivates workflows whose binding is not live."""
    if plan.action in ("deploy", "resume") and plan.workflow_id:
        with transaction(db) as session:
            if plan.version_id in deploy.live_versions(session, plan.tenant_id, plan.project_id):
                return
        with contextlib.suppress(ExternalServiceError):
            wrk.deactivate_workflow(plan.workflow_id, retry=wrk.retry.override(max_attempts=2))


def _alert(db: Any, settings: Settings, tenant_id: str, summary: str, details: str, key: str) -> None:
    with transaction(db) as session:
        notifications.ops_alert(
            session,
            settings.ops_email,
            summary=summary,
            details=details,
            dedup_key=f"{key}:{hashlib.sha1(details.encode()).hexdigest()[:12]}",
            tenant_id=tenant_id,
        )


ENDPOINTS = [
    Endpoint(
        "PATCH",
        "/v1/automation-versions/{version_id}/status",
        change_status,
        "Deploy (Ready to Launch -> Live), resume (Paused -> Live) or pause (Live -> Paused) a version",
        request=StatusChange,
        response=AutomationVersionOut,
        tenant_header=True,
        errors=[404, 409, 422, 500, 502],
        headers=["Idempotency-Key"],
        tags=["automation versions"],
    ),
]
