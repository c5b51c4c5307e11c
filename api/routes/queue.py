"""The trigger queue's ops view: stats, one trigger, and requeueing a dead trigger."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import Principal, require, tenant_scope
from api.openapi import Endpoint
from api.params import Integer
from api.problems import Problem
from api.request_rules import integer_param
from api.requests import engine
from domain.core import lifecycle
from domain.core.lifecycle import Actor
from domain.core.models import TriggerQueue
from domain.core.store import read_transaction, transaction
from domain.queue import queue

# Platform-wide triggers (releases) belong to no tenant: only these platform roles (the token's flat
# `roles`, see api.auth) may see or act on them; a tenant's rows need the role in that tenant.
PLATFORM_ROLES = frozenset({"ops_admin", "admin", "ops_release"})
TRIGGER_ID = Integer("trigger_id", description="a trigger's id")


class KindStats(BaseModel):
    states: dict[str, int]
    oldest_available_age_s: float | None
    oldest_launched_age_s: float | None  # since launch: a row nobody reconciled would grow old here


class QueueStats(BaseModel):
    kinds: dict[str, KindStats]
    at: datetime


class Trigger(BaseModel):
    id: int
    kind: str
    tenant_id: str | None
    state: str
    attempts: int
    max_attempts: int
    dedup_key: str | None
    run_id: str | None
    last_error: str | None
    available_at: datetime
    created_at: datetime
    finished_at: datetime | None


def trigger_view(row: TriggerQueue) -> dict[str, Any]:
    return Trigger.model_validate(row, from_attributes=True).model_dump(mode="json")


def _find(session: Any, principal: Principal, tenants: frozenset[str], row_id: int) -> TriggerQueue | None:
    scope: ColumnElement[bool] = TriggerQueue.tenant_id.in_(list(tenants))
    if principal.roles & PLATFORM_ROLES:
        scope = or_(scope, TriggerQueue.tenant_id.is_(None))
    row: TriggerQueue | None = session.scalars(
        select(TriggerQueue).where(TriggerQueue.id == row_id, scope)
    ).one_or_none()
    return row


def _row_id(request: Request) -> int:
    raw = request.path_params["trigger_id"]
    row_id = integer_param(raw, TRIGGER_ID.low, TRIGGER_ID.high)
    if row_id is None:  # no trigger has such an id
        raise Problem(404, "not_found", f"trigger {raw} not found")
    return row_id


async def queue_stats(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)

    def load() -> dict[str, Any]:
        with read_transaction(engine(request)) as session:
            return queue.stats(session, tenant_ids=tenants, tenantless=bool(principal.roles & PLATFORM_ROLES))

    return JSONResponse(QueueStats.model_validate(await run_in_threadpool(load)).model_dump(mode="json"))


async def get_trigger(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)
    row_id = _row_id(request)

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            row = _find(session, principal, tenants, row_id)
            return None if row is None else trigger_view(row)

    found = await run_in_threadpool(load)
    if found is None:
        raise Problem(404, "not_found", f"trigger {row_id} not found")
    return JSONResponse(found)


async def requeue_trigger(request: Request) -> JSONResponse:
    principal = require(request)
    tenants = tenant_scope(request, principal)
    row_id = _row_id(request)

    def apply() -> dict[str, Any] | Problem:
        with transaction(engine(request)) as session:
            row = _find(session, principal, tenants, row_id)
            if row is None:
                return Problem(404, "not_found", f"trigger {row_id} not found")
            previous = row.state
            if not queue.requeue(session, row_id):
                return Problem(
                    409,
                    "conflict",
                    f"trigger {row_id} is {previous!r}; only a dead trigger is requeued "
                    "(and only while no live trigger holds its dedup key)",
                )
            lifecycle.record(
                session,
                tenant_id=row.tenant_id,
                entity_type="trigger_queue",
                entity_id=str(row_id),
                action="trigger_requeued",
                actor=Actor.user(principal.sub),
                metadata={"previous_state": previous, "kind": row.kind},
            )
            session.refresh(row)
            return trigger_view(row)

    result = await run_in_threadpool(apply)
    if isinstance(result, Problem):
        raise result
    return JSONResponse(result)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/queue/stats",
        queue_stats,
        "Trigger counts per kind and state, oldest available and oldest launched age",
        response=QueueStats,
        tenant_header=True,
        tags=["queue"],
    ),
    Endpoint(
        "GET",
        "/v1/queue/{trigger_id}",
        get_trigger,
        "One trigger: its state, attempts, run and last error",
        response=Trigger,
        tenant_header=True,
        path_params=[TRIGGER_ID],
        errors={404: ["not_found"]},
        tags=["queue"],
    ),
    Endpoint(
        "POST",
        "/v1/queue/{trigger_id}/requeue",
        requeue_trigger,
        "Requeue a dead trigger (audited)",
        response=Trigger,
        tenant_header=True,
        path_params=[TRIGGER_ID],
        errors={404: ["not_found"], 409: ["conflict"]},
        tags=["queue"],
    ),
]
