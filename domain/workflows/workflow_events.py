"""Consumed events (`shard.updated`, `integration.opportunity.updated`), from `POST /v1/events` or from
RabbitMQ: each is recorded once by its tenant and id (a repeat is a duplicate, nothing more; the id is
the producer's, so another tenant's event of the same id is its own), and starts one execution of every
active workflow of its tenant whose `trigger_on` names its type, in the same transaction (execution dedup
key `event:<event id>:<workflow id>`, unique per tenant: one per event and workflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.core.errors import UnknownTenant
from domain.core.lifecycle import Actor
from domain.core.models import ConsumedEvent, Tenant
from domain.core.store import is_postgres
from domain.workflows.workflows import start_execution, triggered_by


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["shard.updated", "integration.opportunity.updated"]
    tenant_id: str = Field(min_length=1, max_length=36)
    occurred_at: AwareDatetime
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Consumed:
    event_id: str
    duplicate: bool
    executions: list[str]
    received_at: datetime


def consume(session: Session, event: EventIn, *, source: Literal["http", "amqp"], actor: Actor) -> Consumed:
    """Record the event (once per tenant and id) and start its executions, in the caller's transaction."""
    if session.get(Tenant, event.tenant_id) is None:
        raise UnknownTenant(event.tenant_id)
    insert = pg_insert if is_postgres(session) else sqlite_insert
    inserted = session.execute(
        insert(ConsumedEvent)
        .values(
            id=event.id,
            tenant_id=event.tenant_id,
            type=event.type,
            occurred_at=event.occurred_at,
            data=event.data,
            source=source,
            executions=[],
            received_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "id"])
        .returning(ConsumedEvent.id)
    ).scalar_one_or_none()
    row = session.get_one(ConsumedEvent, (event.tenant_id, event.id))
    if inserted is None:
        return Consumed(row.id, True, list(row.executions), row.received_at)
    started = []
    for workflow in triggered_by(session, event.tenant_id, event.type):
        result = start_execution(
            session,
            workflow,
            # The event's data is the input (so `/input/account_id` reads it as from an API start), and
            # the whole event is under `event` (which wins over a data field of that name).
            input={**event.data, "event": event.model_dump(mode="json")},
            actor=actor,
            trigger={"source": "event", "event_id": event.id, "event_type": event.type, "via": source},
            dedup_key=f"event:{event.id}:{workflow.id}",
        )
        started.append(result.execution.id)
    row.executions = started
    return Consumed(row.id, False, started, row.received_at)
