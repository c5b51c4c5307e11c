"""A sync's view is read in one snapshot: a phase completing while the view is read shows either before
(progress running, the phase not completed) or after (both completed), never half of each. The view's
progress row and its audit rows are two statements; the completion commits between them."""

from __future__ import annotations

from sqlalchemy import event

from domain.core.models import utcnow
from domain.core.store import transaction
from domain.phases import phases
from domain.queue import queue
from domain.queue.triggers import PhaseTrigger
from tests.api.conftest import bearer, make_token
from tests.domain import factories


def test_a_phase_completing_while_its_sync_is_read_is_seen_whole_or_not_at_all(client, settings, engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
    headers = bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api"))
    accepted = client.post("/api/v1/workflow/phase/1", json={"user_id": "u", "sync_id": "s"}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    with transaction(engine) as session:
        (claimed,) = queue.claim(session, [phases.KIND], 1, 60, "test")
    trigger = PhaseTrigger.model_validate(claimed.payload)
    row = phases.PhaseRow(claimed.id, claimed.claim_token, claimed.attempts, trigger)
    with transaction(engine) as session:
        plan = phases.begin(session, row)

    completed_during_read = []

    def complete_between_the_views_statements(_conn, _cursor, statement, *_args) -> None:
        if completed_during_read or not statement.lstrip().startswith("SELECT") or "FROM phase_audit" not in statement:
            return
        completed_during_read.append(True)  # before the write: its own statements come through here too
        with transaction(engine) as session:
            phases.complete(session, row, plan, run_id=None, started_at=utcnow(), duration_s=0.0)

    event.listen(engine, "before_cursor_execute", complete_between_the_views_statements)
    try:
        during = client.get(accepted.headers["location"], headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", complete_between_the_views_statements)
    after = client.get(accepted.headers["location"], headers=headers)

    assert completed_during_read
    assert during.status_code == after.status_code == 200, (during.text, after.text)
    assert (during.json()["progress"]["status"], during.json()["phases"]["1"]) == ("running", "pending")
    assert (after.json()["progress"]["status"], after.json()["phases"]["1"]) == ("completed", "completed")
