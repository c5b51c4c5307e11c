"""The approval sweeper: its sensor launches a run only when approvals are overdue or callbacks are due;
the run expires overdue approvals (on_timeout applied) and calls standalone approvals' callback URLs
(through the sandbox over loopback, the one retry policy, at least once, recorded before the call)."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from api.app import create_app
from domain.core.models import HitlApproval, HitlApprovalCallback
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.workflows import approval_callbacks, approvals
from orchestration_defs.approvals import approval_sweeper
from resources.approval_callbacks import callback_client, signature
from resources.dagster_resources import ApprovalCallbacksResource, DatabaseResource
from sensors.workflows import approval_sweeper_sensor
from tests.api.conftest import bearer, make_token
from tests.domain import factories
from tests.domain.test_approvals import member


@pytest.fixture
def resources(database_url, flow_env):
    return {"database": DatabaseResource(url=database_url), "approval_callbacks": ApprovalCallbacksResource()}


@pytest.fixture
def world(engine):
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        alice = member(session, tenant.id, ["approver"], "alice")
        return {"tenant": tenant.id, "alice": alice.id}


def _tick(instance, resources) -> dg.SensorResult:
    with dg.build_sensor_context(
        instance=instance, resources=resources, sensor_name="approval_sweeper_sensor"
    ) as context:
        return approval_sweeper_sensor.evaluate_tick(context)


def _standalone(engine, world, sandbox, *, on_timeout="reject", name="billing") -> str:
    with transaction(engine) as session:
        return approvals.open_approval(
            session,
            tenant_id=world["tenant"],
            requested_by="billing-service",
            assignees=[world["alice"]],
            message="Refund 120 EUR?",
            timeout=dt.timedelta(hours=1),
            on_timeout=on_timeout,
            context={"invoice": "INV-7"},
            callback_url=f"{sandbox.url}/callbacks/{name}",
            settings=Settings(environment="test"),
        ).id


def _decide(engine, world, approval_id, decision="approve") -> None:
    with transaction(engine) as session:
        assert approvals.decide(
            session, tenant_id=world["tenant"], approval_id=approval_id, decision=decision, user_id=world["alice"]
        ).won


def _callbacks(sandbox) -> list[dict]:
    return sandbox.http.get("/_sandbox/callbacks").json()


def test_nothing_to_do_launches_nothing_and_a_sweep_in_flight_is_not_doubled(
    engine, instance, resources, world, sandbox
):
    approval_id = _standalone(engine, world, sandbox)
    rested = _tick(instance, resources)
    assert not rested.run_requests and rested.skip_message == "no overdue approval, no due callback"
    with transaction(engine) as session:
        session.execute(
            update(HitlApproval)
            .where(HitlApproval.id == approval_id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    [request] = _tick(instance, resources).run_requests
    assert request.tags["wrk/overdue"] == "1"
    instance.create_run_for_job(approval_sweeper, tags=request.tags, status=dg.DagsterRunStatus.STARTED)
    busy = _tick(instance, resources)
    assert not busy.run_requests and busy.skip_message == "an approval sweep is in flight"


def test_a_decided_standalone_approval_calls_its_callback_once_signed(engine, instance, resources, world, sandbox):
    approval_id = _standalone(engine, world, sandbox)
    _decide(engine, world, approval_id)
    # The process could die here: the decision is committed with its callback's row, nothing called yet.
    with transaction(engine) as session:
        row = session.scalars(select(HitlApprovalCallback)).one()
        assert (row.status, row.attempts, row.hitl_approval_id) == ("pending", 0, approval_id)
    assert _callbacks(sandbox) == []
    [request] = _tick(instance, resources).run_requests
    assert request.tags["wrk/callbacks"] == "1"
    result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.success
    assert result.output_for_node("sweep_approvals") == {"expired": 0, "delivered": 1, "failed": 0, "dead": 0}
    [received] = _callbacks(sandbox)
    body = received["body"]
    assert received["name"] == "billing"
    assert (body["approval_id"], body["status"], body["outcome"], body["decided_by"]) == (
        approval_id,
        "approved",
        "approve",
        world["alice"],
    )
    assert body["context"] == {"invoice": "INV-7"}
    assert received["headers"]["idempotency-key"] == f"hitl-approval:{approval_id}"
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    assert received["headers"]["x-wrk-signature"] == signature(Settings(environment="test"), raw)
    with transaction(engine) as session:
        assert session.scalars(select(HitlApprovalCallback.status)).one() == "delivered"
    again = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert again.output_for_node("sweep_approvals") == {"expired": 0, "delivered": 0, "failed": 0, "dead": 0}
    assert len(_callbacks(sandbox)) == 1
    assert not _tick(instance, resources).run_requests


def test_a_failing_callback_is_retried_by_the_one_policy(engine, instance, resources, world, sandbox):
    approval_id = _standalone(engine, world, sandbox)
    _decide(engine, world, approval_id, "reject")
    sandbox.fault("POST", "/callbacks/.*", status=503, count=2)
    result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.output_for_node("sweep_approvals") == {"expired": 0, "delivered": 1, "failed": 0, "dead": 0}
    assert [c["status"] for c in sandbox.calls("POST", "/callbacks/.*")] == [503, 503, 200]
    [received] = _callbacks(sandbox)
    assert received["body"]["outcome"] == "reject"


def test_a_callback_refused_for_good_is_dead_and_one_still_failing_backs_off(
    engine, instance, resources, world, sandbox
):
    refused = _standalone(engine, world, sandbox, name="gone")
    down = _standalone(engine, world, sandbox, name="down")
    _decide(engine, world, refused)
    _decide(engine, world, down)
    sandbox.fault("POST", "/callbacks/gone", status=404, count=1)
    sandbox.fault("POST", "/callbacks/down", status=503, count=100)
    result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.output_for_node("sweep_approvals") == {"expired": 0, "delivered": 0, "failed": 1, "dead": 1}
    with transaction(engine) as session:
        rows = {r.hitl_approval_id: r for r in session.scalars(select(HitlApprovalCallback))}
        assert rows[refused].status == "dead" and "404" in rows[refused].last_error
        assert rows[down].status == "pending" and rows[down].attempts == 1
        assert rows[down].next_attempt_at > rows[down].created_at  # backs off: not due again at once


def test_a_delivery_that_died_after_calling_calls_again_with_the_same_key(engine, instance, resources, world, sandbox):
    approval_id = _standalone(engine, world, sandbox)
    _decide(engine, world, approval_id)
    client = callback_client()
    with transaction(engine) as session:
        [claimed] = approval_callbacks.claim_due(session)
    client(claimed)  # called; the deliverer dies before recording the result
    client.close()
    with transaction(engine) as session:  # its claim lapses
        session.execute(update(HitlApprovalCallback).values(next_attempt_at=dt.datetime.now(dt.UTC)))
    result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.output_for_node("sweep_approvals") == {"expired": 0, "delivered": 1, "failed": 0, "dead": 0}
    keys = [c["headers"]["idempotency-key"] for c in _callbacks(sandbox)]
    assert keys == [f"hitl-approval:{approval_id}"] * 2  # at least once; the receiver dedupes on the key


def test_the_sweep_expires_a_standalone_approval_and_calls_back_with_on_timeout(
    engine, instance, resources, world, sandbox
):
    approval_id = _standalone(engine, world, sandbox, on_timeout="approve")
    with transaction(engine) as session:
        session.execute(
            update(HitlApproval)
            .where(HitlApproval.id == approval_id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    assert result.output_for_node("sweep_approvals")["expired"] == 1
    [received] = _callbacks(sandbox)
    assert (received["body"]["status"], received["body"]["outcome"]) == ("expired", "approve")


def test_a_standalone_request_through_the_api_calls_back_on_decision(engine, instance, resources, world, sandbox):
    settings = Settings(environment="test")
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        service = bearer(make_token(settings, tenants=[world["tenant"]], roles=["service"], sub="billing-service"))
        created = client.post(
            "/v1/hitl/approvals",
            headers={**service, "X-Tenant-ID": world["tenant"]},
            json={
                "message": "Refund?",
                "assignees": [world["alice"]],
                "timeout": "PT30M",
                "on_timeout": "reject",
                "callback_url": f"{sandbox.url}/callbacks/api",
            },
        )
        assert created.status_code == 201, created.text
        approval_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/hitl/approvals/{approval_id}"
        alice = bearer(make_token(settings, tenants=[world["tenant"]], roles=["approver"], sub=world["alice"]))
        decided = client.post(
            f"/v1/hitl/approvals/{approval_id}/decision",
            headers={**alice, "X-Tenant-ID": world["tenant"]},
            json={"decision": "approve"},
        )
        assert decided.status_code == 200
        approval_sweeper.execute_in_process(instance=instance, resources=resources)
        [received] = _callbacks(sandbox)
        assert received["name"] == "api" and received["body"]["outcome"] == "approve"
        detail = client.get(f"/hitl/approvals/{approval_id}", headers={**alice, "X-Tenant-ID": world["tenant"]})
        assert detail.json()["callback"]["status"] == "delivered"


def test_the_emailed_links_arrive_and_decide_from_the_inbox(engine, instance, database_url, flow_env, world, sandbox):
    import re

    from orchestration_defs.housekeeping import deliver_notifications
    from resources.dagster_resources import NotificationsResource

    approval_id = _standalone(engine, world, sandbox)
    sent = deliver_notifications.execute_in_process(
        instance=instance,
        resources={"database": DatabaseResource(url=database_url), "notifications": NotificationsResource()},
    )
    assert sent.success
    [mail] = sandbox.mail()
    assert mail["subject"] == "Approval needed: Refund 120 EUR?"
    assert "billing-service asks for your decision" in mail["body"]
    links = dict(re.findall(r"^(Approve|Reject): (\S+)\r?$", mail["body"], re.MULTILINE))
    settings = Settings(environment="test")
    assert set(links) == {"Approve", "Reject"}
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        path = links["Reject"][len(settings.hitl_link_base_url) :]
        assert client.get(path).status_code == 200
        assert client.post(path).status_code == 200
        assert client.post(links["Approve"][len(settings.hitl_link_base_url) :]).status_code == 410
    with transaction(engine) as session:
        row = session.get(HitlApproval, approval_id)
        assert (row.status, row.decided_by) == ("rejected", world["alice"])


def test_a_callback_to_a_host_no_longer_allowed_is_dead_without_a_call(
    engine, instance, resources, world, sandbox, monkeypatch
):
    """APPROVAL_CALLBACK_HOSTS is checked again at delivery: set or narrowed after the request was made."""
    from domain.core.settings import get_settings

    approval = _standalone(engine, world, sandbox, name="billing")
    _decide(engine, world, approval)
    monkeypatch.setenv("APPROVAL_CALLBACK_HOSTS", '["billing.internal"]')
    get_settings.cache_clear()
    try:
        result = approval_sweeper.execute_in_process(instance=instance, resources=resources)
    finally:
        get_settings.cache_clear()
    assert result.output_for_node("sweep_approvals")["dead"] == 1
    with transaction(engine) as session:
        [row] = session.scalars(select(HitlApprovalCallback)).all()
    assert row.status == "dead" and "APPROVAL_CALLBACK_HOSTS" in row.last_error
    assert _callbacks(sandbox) == []  # never called
