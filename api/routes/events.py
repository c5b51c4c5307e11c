"""Consumed events over HTTP: `POST /v1/events` (service role). RabbitMQ delivers the same events to
`workflow_events_sensor` when RABBITMQ_URL is set; both go through domain.workflows.workflow_events.consume."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require
from api.openapi import Answer, Endpoint
from api.problems import Problem
from api.requests import engine, json_body
from domain.core.errors import UnknownTenant
from domain.core.lifecycle import Actor
from domain.core.store import transaction
from domain.workflows.workflow_events import EventIn, consume

# A producing service holds `service` as a platform role (any tenant) or in the event's tenant.
EVENT_ROLES = frozenset({"service", "ops_admin", "admin"})


class EventAccepted(BaseModel):
    event_id: str
    status: str  # "accepted" | "duplicate"
    duplicate: bool
    executions: list[str]
    received_at: datetime


async def post_event(request: Request) -> JSONResponse:
    principal = require(request, EVENT_ROLES)
    event = await json_body(request, EventIn)
    platform = bool(principal.roles & EVENT_ROLES) and not principal.tenant_roles.get(event.tenant_id)
    if not (principal.roles_in(event.tenant_id) & EVENT_ROLES) and not (platform and "service" in principal.roles):
        raise Problem(403, "forbidden", f"no event role in tenant {event.tenant_id}")

    def apply() -> dict[str, Any]:
        with transaction(engine(request)) as session:
            consumed = consume(session, event, source="http", actor=Actor.user(principal.sub))
            return {
                "event_id": consumed.event_id,
                "status": "duplicate" if consumed.duplicate else "accepted",
                "duplicate": consumed.duplicate,
                "executions": consumed.executions,
                "received_at": consumed.received_at,
            }

    try:
        body = await run_in_threadpool(apply)
    except UnknownTenant as exc:
        raise Problem(
            422,
            "validation_error",
            f"unknown tenant {exc}",
            errors=[{"field": "tenant_id", "message": "unknown tenant"}],
        ) from exc
    return JSONResponse(
        EventAccepted.model_validate(body).model_dump(mode="json"), status_code=200 if body["duplicate"] else 202
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/events",
        post_event,
        "Consume an event (shard.updated, integration.opportunity.updated): starts the workflows it triggers",
        request=EventIn,
        response=EventAccepted,
        status=202,
        answers=[Answer(200, "A duplicate: this event id was consumed before (status `duplicate`)", EventAccepted)],
        tags=["events"],
    ),
]
