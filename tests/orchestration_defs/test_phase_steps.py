"""A phase trigger's two steps as the worker writes them (orchestration_defs/phases.py step_store: on
PostgreSQL one statement each, on an autocommit connection where the phase allows, else a Session's
transaction): what a completion records, and that a claim which no longer holds its trigger records
nothing at all, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from domain.core.models import Notification, PhaseAudit, PhaseEvent, SyncProgress, TriggerQueue, utcnow
from domain.core.store import autocommit, transaction
from domain.phases import phases
from domain.queue import queue
from domain.queue.triggers import PhaseTrigger
from orchestration_defs.phases import step_store
from tests.domain import factories

MATCHES = [{"claim_id": "ask", "confidence": "0.60", "amount": "10.00", "currency": "EUR", "evidence_ids": ["e1"]}]
RECORDED_S = 0.25  # what the worker says a trigger took: a value given, stored as given
BODIES = {
    1: {"seller_id": "sélleur-1"},
    2: {},
    4: {"matches": MATCHES},
}


@pytest.fixture
def tenant(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def _held(engine, tenant: str, phase: int, user: str, run_id: str) -> phases.PhaseRow:
    """A phase trigger queued as the API queues it, then claimed and launched by `run_id` as a worker does."""
    with autocommit(engine) as connection:
        body = {"user_id": user, "sync_id": "s-1", **BODIES[phase]}
        (accepted,) = phases.accept_many(connection, [phases.posted(tenant, phase, phases.parse_request(phase, body))])
    with transaction(engine) as session:
        (claimed,) = queue.claim(session, [phases.KIND], 10, 60, f"phase_worker:{run_id}", run_id=run_id)
    assert claimed.id == accepted.trigger_id
    return phases.PhaseRow(
        claimed.id, claimed.claim_token, claimed.attempts, PhaseTrigger.model_validate(claimed.payload)
    )


def _begin(engine, row: phases.PhaseRow) -> phases.Plan:
    with step_store(engine, row.trigger.phase in phases.ONE_STATEMENT_BEGIN) as store:
        return phases.begin(store, row)


def _complete(engine, row: phases.PhaseRow, plan: phases.Plan, run_id: str) -> None:
    with step_store(engine, row.trigger.phase in phases.ONE_STATEMENT_COMPLETE) as store:
        result = {"job": "j-1"}
        phases.complete(store, row, plan, run_id=run_id, started_at=utcnow(), duration_s=RECORDED_S, result=result)


def _count(engine, model, **where) -> int:
    with transaction(engine) as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize("phase", [1, 2, 4])
def test_a_completion_acks_and_records_progress_audit_and_event_together(engine, tenant, phase):
    user = f"ünïcode-{phase} 🦊"
    row = _held(engine, tenant, phase, user, "run-a")
    plan = _begin(engine, row)
    _complete(engine, row, plan, "run-a")
    with transaction(engine) as session:
        trigger = session.get(TriggerQueue, row.trigger_id)
        assert (trigger.state, trigger.run_id, trigger.claim_token) == ("done", "run-a", None)
        progress = session.scalars(select(SyncProgress).where(SyncProgress.user_id == user)).one()
        assert (progress.phase, progress.status, progress.percent) == (phase, "completed", phase * 100 // 7)
        assert progress.seller_id == BODIES[phase].get("seller_id")
        (audit,) = session.scalars(select(PhaseAudit).where(PhaseAudit.user_id == user)).all()
        assert (audit.trigger_id, audit.run_id, audit.outcome, audit.attempt) == (
            row.trigger_id,
            "run-a",
            "completed",
            1,
        )
        assert (audit.details["result"], audit.duration_s, audit.error) == ({"job": "j-1"}, RECORDED_S, None)
        events = session.scalars(select(PhaseEvent).where(PhaseEvent.user_id == user).order_by(PhaseEvent.seq)).all()
    types = [e.type for e in events]
    assert types == ["phase_started", *(["prompt"] if phase == 4 else []), "phase_completed"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].data == {"trigger_id": row.trigger_id, "name": phases.NAMES[phase], "job": "j-1"}


@pytest.mark.parametrize("phase", [1, 4])
def test_a_claim_that_lost_its_trigger_records_nothing(engine, tenant, phase):
    """The worker's claim was lost (its run failed and reconciliation sent the trigger back, another worker
    claimed it) while it was calling out: its completion is refused whole, ack, progress, audit, events,
    prompts and notifications alike; the new holder's claim is untouched."""
    user = f"lost-{phase}"
    row = _held(engine, tenant, phase, user, "run-a")
    plan = _begin(engine, row)
    with transaction(engine) as session:
        assert queue.fail(session, row.trigger_id, row.claim_token, "lost", retryable=True) == "available"
        session.execute(update(TriggerQueue).where(TriggerQueue.id == row.trigger_id).values(available_at=utcnow()))
        (again,) = queue.claim(session, [phases.KIND], 10, 60, "phase_worker:run-b", run_id="run-b")
    assert again.id == row.trigger_id and again.claim_token != row.claim_token
    with pytest.raises(queue.StaleClaim):
        _complete(engine, row, plan, "run-a")
    with transaction(engine) as session:
        trigger = session.get(TriggerQueue, row.trigger_id)
        assert (trigger.state, trigger.run_id, trigger.claim_token) == ("launched", "run-b", again.claim_token)
        progress = session.scalars(select(SyncProgress).where(SyncProgress.user_id == user)).one()
        assert (progress.phase, progress.status) == (phase, "running")
    assert _count(engine, PhaseAudit, user_id=user) == 0
    assert [e.type for e in _events(engine, user)] == ["phase_started"]
    assert _count(engine, Notification, recipient=user) == 0


def _events(engine, user: str) -> list[PhaseEvent]:
    with transaction(engine) as session:
        return list(session.scalars(select(PhaseEvent).where(PhaseEvent.user_id == user).order_by(PhaseEvent.seq)))
