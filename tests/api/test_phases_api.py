"""The phase endpoint as callers use it: service role, tenant from the token, 400 invalid_phase, 422
naming the field, 202 {trigger_id, sync_id, phase}, the same trigger for a retry while pending; reads
scoped to the caller's tenants."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from domain.core.models import TriggerQueue
from domain.core.store import transaction
from tests.api.conftest import bearer, make_token
from tests.domain import factories


@pytest.fixture
def tenants(engine) -> list[str]:
    with transaction(engine) as session:
        return [factories.tenant(session).id, factories.tenant(session).id]


def service(settings, tenant: str) -> dict[str, str]:
    return bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api"))


def test_phase_one_is_queued_and_answered_202(client, settings, tenants, engine):
    body = {"user_id": "user_123", "seller_id": "seller_456", "sync_id": "oauth_user_123_1234567890"}
    response = client.post("/api/v1/workflow/phase/1", json=body, headers=service(settings, tenants[0]))
    assert response.status_code == 202, response.text
    out = response.json()
    assert out == {"trigger_id": out["trigger_id"], "sync_id": "oauth_user_123_1234567890", "phase": 1}
    with transaction(engine) as session:
        row = session.get(TriggerQueue, out["trigger_id"])
        assert row.kind == "phase" and row.tenant_id == tenants[0] and row.state == "available"
        assert row.payload["user_id"] == "user_123" and row.payload["input"]["seller_id"] == "seller_456"


def test_a_retry_while_pending_returns_the_same_trigger(client, settings, tenants, engine):
    body = {"user_id": "u1", "sync_id": "s1"}
    first = client.post("/api/v1/workflow/phase/2", json=body, headers=service(settings, tenants[0])).json()
    again = client.post("/api/v1/workflow/phase/2", json=body, headers=service(settings, tenants[0])).json()
    assert again == first
    other_phase = client.post("/api/v1/workflow/phase/3", json=body, headers=service(settings, tenants[0])).json()
    other_tenant = client.post("/api/v1/workflow/phase/2", json=body, headers=service(settings, tenants[1])).json()
    assert len({first["trigger_id"], other_phase["trigger_id"], other_tenant["trigger_id"]}) == 3
    with transaction(engine) as session:
        assert (
            session.scalar(select(TriggerQueue.tenant_id).where(TriggerQueue.id == other_tenant["trigger_id"]))
            == tenants[1]
        )


def test_without_sync_id_one_is_generated(client, settings, tenants):
    out = client.post("/api/v1/workflow/phase/1", json={"user_id": "u9"}, headers=service(settings, tenants[0])).json()
    assert out["sync_id"].startswith("oauth_u9_") and out["sync_id"].split("_")[-1].isdigit()


@pytest.mark.parametrize("phase", ["0", "8", "abc", "1.5", "-1"])
def test_an_invalid_phase_is_400_naming_it(client, settings, tenants, phase):
    response = client.post(
        f"/api/v1/workflow/phase/{phase}", json={"user_id": "u"}, headers=service(settings, tenants[0])
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_phase" and body["errors"][0]["field"] == "phaseNumber"
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("phase", "body", "field"),
    [
        (1, {"seller_id": "s"}, "user_id"),
        (1, {"user_id": ""}, "user_id"),
        (1, {"user_id": "u\x00"}, "user_id"),  # PostgreSQL stores no NUL character
        (1, {"user_id": "u", "source": {"note": "a\x00"}}, "source.note"),  # nor in the callers' metadata
        (4, {"user_id": "u"}, "matches"),
        (
            4,
            {"user_id": "u", "matches": [{"claim_id": "c", "confidence": 1.2, "amount": 1, "currency": "USD"}]},
            "matches.0.confidence",
        ),
        (
            4,
            {"user_id": "u", "matches": [{"claim_id": "c", "confidence": 0.9, "amount": 1, "currency": "ZZZ"}]},
            "matches.0.currency",
        ),
        (5, {"user_id": "u", "claim_id": "c", "currency": "USD"}, "amount"),
        (6, {"user_id": "u", "claim_id": "c"}, "reason_code"),
        (7, {"user_id": "u", "claim_id": "c", "payout_id": "p", "amount": "-1", "currency": "USD"}, "amount"),
        (7, {"user_id": "u", "claim_id": "c", "amount": "10", "currency": "USD"}, "payout_id"),
    ],
)
def test_a_bad_field_is_422_naming_it_and_nothing_is_queued(client, settings, tenants, engine, phase, body, field):
    response = client.post(f"/api/v1/workflow/phase/{phase}", json=body, headers=service(settings, tenants[0]))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error" and field in [e["field"] for e in problem["errors"]]
    with transaction(engine) as session:
        assert session.scalar(select(TriggerQueue.id).where(TriggerQueue.tenant_id == tenants[0])) is None


def test_phase_four_keeps_decimals_exact(client, settings, tenants, engine):
    matches = [{"claim_id": "c1", "confidence": 0.8499, "amount": "12.34", "currency": "usd", "evidence_ids": ["e"]}]
    out = client.post(
        "/api/v1/workflow/phase/4",
        json={"user_id": "u", "sync_id": "s", "matches": matches},
        headers=service(settings, tenants[0]),
    ).json()
    with transaction(engine) as session:
        stored = session.get(TriggerQueue, out["trigger_id"]).payload["input"]["matches"][0]
    assert stored["confidence"] == "0.8499" and stored["amount"] == "12.34" and stored["currency"] == "USD"


def test_the_service_role_is_required(client, settings, tenants):
    ops = bearer(make_token(settings, tenants=[tenants[0]], roles=["ops_admin"]))
    assert client.post("/api/v1/workflow/phase/1", json={"user_id": "u"}, headers=ops).status_code == 403
    assert client.post("/api/v1/workflow/phase/1", json={"user_id": "u"}).status_code == 401


def test_a_token_of_several_tenants_names_one(client, settings, tenants):
    both = bearer(make_token(settings, tenants=tenants, roles=[], tenant_roles={t: ["service"] for t in tenants}))
    assert client.post("/api/v1/workflow/phase/1", json={"user_id": "u"}, headers=both).status_code == 400
    chosen = client.post("/api/v1/workflow/phase/1", json={"user_id": "u"}, headers={**both, "X-Tenant-ID": tenants[1]})
    assert chosen.status_code == 202


def test_reads_are_tenant_scoped(client, settings, tenants, engine):
    from domain.phases import phases

    with transaction(engine) as session:
        phases.advance_progress(
            session, tenant_id=tenants[0], user_id="u", sync_id="s", phase=1, status=phases.P.RUNNING
        )
    own = client.get("/v1/users/u/syncs/s", headers=service(settings, tenants[0]))
    assert own.status_code == 200 and own.json()["progress"]["phase"] == 1
    user_self = bearer(make_token(settings, tenants=[tenants[0]], roles=["client"], sub="u"))
    assert client.get("/v1/users/u/syncs/s", headers=user_self).status_code == 200
    other_user = bearer(make_token(settings, tenants=[tenants[0]], roles=["client"], sub="v"))
    assert client.get("/v1/users/u/syncs/s", headers=other_user).status_code == 403
    foreign = client.get("/v1/users/u/syncs/s", headers=service(settings, tenants[1]))
    assert foreign.status_code == 404 and foreign.json()["code"] == "not_found"
    assert client.get("/v1/users/u/proof-packets/nope", headers=service(settings, tenants[0])).status_code == 404


def test_a_tenant_the_store_does_not_know_is_403_and_nothing_is_queued(client, settings, engine):
    response = client.post("/api/v1/workflow/phase/1", json={"user_id": "u"}, headers=service(settings, "no-such"))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden" and "no-such" in response.json()["detail"]
    with transaction(engine) as session:
        assert session.scalar(select(TriggerQueue.id)) is None


IDS_IN_SEVERAL_SCRIPTS = ["łukasz-ü", "用户-七", "مستخدم", "🦊-user", "..", "org/42", "a%2Fb/syncs/c"]


@pytest.mark.parametrize("user_id", IDS_IN_SEVERAL_SCRIPTS)
def test_an_id_outside_ascii_is_queued_and_its_location_reads_the_sync(client, settings, tenants, engine, user_id):
    from domain.phases import phases

    sync_id = f"sync {user_id}"
    response = client.post(
        "/api/v1/workflow/phase/1", json={"user_id": user_id, "sync_id": sync_id}, headers=service(settings, tenants[0])
    )
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert location.isascii()
    with transaction(engine) as session:
        assert session.get(TriggerQueue, response.json()["trigger_id"]).payload["user_id"] == user_id
        phases.advance_progress(
            session, tenant_id=tenants[0], user_id=user_id, sync_id=sync_id, phase=1, status=phases.P.RUNNING
        )
    view = client.get(location, headers=service(settings, tenants[0]))
    assert view.status_code == 200, view.text
    assert view.json()["user_id"] == user_id and view.json()["sync_id"] == sync_id


def _complete_due_phases(engine) -> None:
    """Run every due phase trigger to completion, as a phase run records it (nothing called outside)."""
    from domain.core.models import utcnow
    from domain.phases import phases
    from domain.queue import queue
    from domain.queue.triggers import PhaseTrigger

    with transaction(engine) as session:
        claimed = queue.claim(session, [phases.KIND], 100, 60, "test")
    for c in claimed:
        row = phases.PhaseRow(c.id, c.claim_token, c.attempts, PhaseTrigger.model_validate(c.payload))
        with transaction(engine) as session:
            plan = phases.begin(session, row)
        with transaction(engine) as session:
            phases.complete(session, row, plan, run_id=None, started_at=utcnow(), duration_s=0.0)


def test_a_repeated_call_back_of_a_completed_phase_is_its_trigger_and_queues_nothing(client, settings, tenants, engine):
    headers = service(settings, tenants[0])
    user = "u1"
    claim = {"amount": "10", "currency": "USD"}
    posts = [
        (2, {"user_id": user, "sync_id": "s"}),
        (5, {"user_id": user, "sync_id": "s", "claim_id": "c1", **claim}),
    ]
    first = [client.post(f"/api/v1/workflow/phase/{n}", json=body, headers=headers).json() for n, body in posts]
    _complete_due_phases(engine)
    again = [client.post(f"/api/v1/workflow/phase/{n}", json=body, headers=headers) for n, body in posts]
    assert [r.status_code for r in again] == [202, 202]
    assert [r.json() for r in again] == first
    with transaction(engine) as session:
        assert session.scalar(select(TriggerQueue.id).where(TriggerQueue.state != "done")) is None
    # Another claim of the same sync is its own phase 5; the same phase of another sync too.
    other_claim = {"user_id": user, "sync_id": "s", "claim_id": "c2", **claim}
    new = client.post("/api/v1/workflow/phase/5", json=other_claim, headers=headers).json()
    other_sync = client.post(
        "/api/v1/workflow/phase/2", json={"user_id": user, "sync_id": "s2"}, headers=headers
    ).json()
    assert {new["trigger_id"], other_sync["trigger_id"]}.isdisjoint({f["trigger_id"] for f in first})
