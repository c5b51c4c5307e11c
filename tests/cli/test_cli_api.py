"""`wrk-orch`'s API commands against a real uvicorn API on each store: each command's table and --json,
and the exit codes of a 404 (3), a 409 (4), a 401/403 (5) and a bad request (2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from cli.demo import seed_demo
from cli.main import app
from domain.core import models
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.queue import queue
from tests.api.conftest import make_token
from tests.servers import BIN, ServerThread, until

runner = CliRunner()


@pytest.fixture
def settings() -> Settings:
    return Settings(environment="test")


@pytest.fixture
def demo(engine) -> dict[str, Any]:
    with transaction(engine) as session:
        return seed_demo(session)


@pytest.fixture
def api(settings, engine) -> Iterator[str]:
    server = ServerThread(create_app(settings, engine)).start()
    yield server.url
    server.stop()


def wrk(api: str, token: str | None, *args: str, tenant: str | None = None) -> Any:
    env = {"WRK_ORCH_API_URL": api, "WRK_ORCH_TOKEN": token or "", "WRK_ORCH_TENANT": tenant or ""}
    return runner.invoke(app, list(args), env=env)


def ok_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _tenant(demo, index: int = 0) -> str:
    return demo["tenants"][index]["id"]


def _project(demo, name: str, index: int = 0) -> dict[str, Any]:
    return next(p for p in demo["tenants"][index]["projects"] if p["name"] == name)


# --- releases ---------------------------------------------------------------------------------------


def test_release_run_queues_a_release_once_and_list_and_status_show_it(api, settings, engine):
    ops = make_token(settings, tenants=[], roles=["ops_release"], sub="rita")
    queued = ok_json(wrk(api, ops, "release", "run", "v7.1.0", "--repository", "bllvm-node", "--json"))
    assert queued["status"] == "queued" and queued["tag"] == "v7.1.0" and queued["trigger_id"]
    again = wrk(api, ops, "release", "run", "v7.1.0")
    assert again.exit_code == 0 and "already queued" in again.stdout
    with transaction(engine) as session:
        row = session.get(models.TriggerQueue, queued["trigger_id"])
        assert (row.kind, row.payload["source"], row.payload["repositories"]) == ("release", "api", ["bllvm-node"])
        [audit] = session.scalars(select(models.AuditLog).where(models.AuditLog.action == "release_requested")).all()
        assert (audit.actor_id, audit.entity_id) == ("rita", str(queued["trigger_id"]))
    # Not built yet: no release row, so its status is not found.
    missing = wrk(api, ops, "release", "status", "v7.1.0")
    assert missing.exit_code == 3 and "not found" in missing.stderr
    listed = ok_json(wrk(api, ops, "release", "list", "--json"))
    assert listed == {"releases": []}
    bad = wrk(api, ops, "release", "run", "not a tag")
    assert bad.exit_code == 2 and "validation_error" in bad.stderr


def test_release_commands_refuse_a_caller_without_a_platform_role_and_without_a_token(api, settings, demo):
    forbidden = wrk(api, make_token(settings, tenants=[_tenant(demo)], roles=["client"]), "release", "list")
    assert forbidden.exit_code == 5 and "(forbidden)" in forbidden.stderr
    anonymous = wrk(api, None, "release", "list")
    assert anonymous.exit_code == 5 and "(unauthorized)" in anonymous.stderr
    expired = make_token(settings, tenants=[], roles=["ops_release"], exp=1)
    refused = wrk(api, expired, "release", "list")
    assert refused.exit_code == 5 and expired not in refused.output


# --- deploys ----------------------------------------------------------------------------------------


def test_deploy_status_and_history_show_the_live_version_and_every_deployment(
    api, settings, demo, engine, sandbox, flow_env
):
    tenant = _tenant(demo)
    project = _project(demo, "Order Sync")
    ready = [v for v in project["versions"] if v["status"] == "Ready to Launch"]
    deployed = wrk(api, None, "deploy", ready[0]["id"], "--status", "Live", "--reason", "weekly", "--actor", "olivia")
    assert deployed.exit_code == 0, deployed.output
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"])
    status = ok_json(wrk(api, token, "deploy", "status", project["id"], "--json"))
    assert status["live_version"]["id"] == ready[0]["id"] and status["name"] == "Order Sync"
    assert status["last_deployment"]["action"] == "deploy" and status["last_deployment"]["actor_id"] == "olivia"
    assert "idempotency_key" not in status["last_deployment"]
    table = wrk(api, token, "deploy", "status", project["id"])
    assert table.exit_code == 0 and "Project Order Sync" in table.stdout and ready[0]["id"] in table.stdout
    history = ok_json(wrk(api, token, "deploy", "history", project["id"], "--json"))
    assert history["total"] == 1 and history["items"][0]["status"] == "committed"
    assert history["items"][0]["reason"] == "weekly"
    shown = wrk(api, token, "deploy", "history", project["id"])
    assert shown.exit_code == 0 and "1 of 1 deployments" in shown.stdout and "weekly" in shown.stdout
    foreign = make_token(settings, tenants=[_tenant(demo, 1)], roles=["ops_admin"])
    assert wrk(api, foreign, "deploy", "history", project["id"]).exit_code == 3
    assert wrk(api, foreign, "deploy", "status", project["id"]).exit_code == 3


# --- approvals --------------------------------------------------------------------------------------


def _approval(api: str, settings, tenant: str, assignee: str = "anna", **extra: Any) -> str:
    service = make_token(settings, tenants=[tenant], roles=["service"], sub="billing")
    answer = httpx.post(
        f"{api}/v1/hitl/approvals",
        json={"message": "Refund 120 EUR to ACME?", "assignees": [assignee], "context": {"order": "A-17"}, **extra},
        headers={"Authorization": f"Bearer {service}", "X-Tenant-ID": tenant},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def test_approvals_list_show_and_decide_once(api, settings, demo):
    tenant = _tenant(demo)
    approval = _approval(api, settings, tenant)
    anna = make_token(settings, tenants=[tenant], roles=["approver"], sub="anna")
    listed = wrk(api, anna, "approvals", "list", "--mine", tenant=tenant)
    assert listed.exit_code == 0 and approval in listed.stdout and "Refund 120 EUR" in listed.stdout
    assert ok_json(wrk(api, anna, "approvals", "list", "--json", tenant=tenant))["items"][0]["id"] == approval
    shown = wrk(api, anna, "approvals", "show", approval, tenant=tenant)
    assert shown.exit_code == 0 and "context.order" in shown.stdout and "A-17" in shown.stdout
    bruno = make_token(settings, tenants=[tenant], roles=["approver"], sub="bruno")
    not_assignee = wrk(api, bruno, "approvals", "decide", approval, "--approve", tenant=tenant)
    assert not_assignee.exit_code == 5
    decided = ok_json(
        wrk(api, anna, "approvals", "decide", approval, "--approve", "--comment", "fine", "--json", tenant=tenant)
    )
    assert (decided["status"], decided["decided_by"], decided["decision_comment"]) == ("approved", "anna", "fine")
    late = wrk(api, anna, "approvals", "decide", approval, "--reject", tenant=tenant)
    assert late.exit_code == 4 and "(approval_already_decided)" in late.stderr
    # One line of ours (the in-process API's own log lines share this stderr).
    assert [line for line in late.stderr.splitlines() if line.startswith("wrk-orch")] == [
        f"wrk-orch: Approval already decided: approval {approval} is already approved (outcome approve) by anna "
        "(approval_already_decided)"
    ]
    assert wrk(api, anna, "approvals", "show", "no-such-approval", tenant=tenant).exit_code == 3
    assert ok_json(wrk(api, anna, "approvals", "list", "--json", tenant=tenant))["items"] == []  # none pending
    decided_too = ok_json(wrk(api, anna, "approvals", "list", "--status", "all", "--json", tenant=tenant))
    assert [a["id"] for a in decided_too["items"]] == [approval]
    no_tenant = wrk(api, anna, "approvals", "list")
    assert no_tenant.exit_code == 2 and "(tenant_required)" in no_tenant.stderr


def test_approvals_decide_sends_decision_fields_typed_as_the_approval_declares_them(api, settings, demo):
    tenant = _tenant(demo)
    declared = [
        {"name": "amount", "type": "number", "required": True},
        {"name": "urgent", "type": "boolean"},
        {"name": "region", "type": "choice", "options": ["eu", "us"]},
        {"name": "note", "type": "string"},
    ]
    approval = _approval(api, settings, tenant, fields=declared)
    anna = make_token(settings, tenants=[tenant], roles=["approver"], sub="anna")
    shown = wrk(api, anna, "approvals", "show", approval, tenant=tenant)
    assert shown.exit_code == 0 and "Decision fields" in shown.stdout and "amount" in shown.stdout

    def decide(*fields: str) -> Any:
        flags = [arg for field in fields for arg in ("--field", field)]
        return wrk(api, anna, "approvals", "decide", approval, "--approve", *flags, "--json", tenant=tenant)

    not_a_number = decide("amount=lots")
    assert not_a_number.exit_code == 2 and "amount" in not_a_number.stderr
    missing = decide("region=eu")  # amount is required: the API's 422 names it
    assert missing.exit_code == 2 and "fields.amount" in missing.stderr and "(validation_error)" in missing.stderr
    decided = ok_json(decide("amount=120.5", "urgent=yes", "region=eu", "note=42"))
    assert decided["status"] == "approved"
    assert decided["field_values"] == {"amount": 120.5, "urgent": True, "region": "eu", "note": "42"}


# --- executions -------------------------------------------------------------------------------------


def _execution(api: str, token: str, tenant: str, demo) -> dict[str, Any]:
    workflow = httpx.get(
        f"{api}/v1/workflows", headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    ).json()["items"][0]
    started = httpx.post(
        f"{api}/v1/workflows/{workflow['id']}/executions",
        json={"input": {"account_id": "acct-1"}},
        headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant},
    )
    assert started.status_code == 202, started.text
    return started.json()


def test_executions_list_show_and_cancel(api, settings, demo):
    tenant = _tenant(demo)
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olivia")
    started = _execution(api, token, tenant, demo)
    execution = started["execution_id"]
    listed = wrk(api, token, "executions", "list", tenant=tenant)
    assert listed.exit_code == 0 and execution in listed.stdout and "queued" in listed.stdout
    page = ok_json(wrk(api, token, "executions", "list", "--status", "queued", "--json", tenant=tenant))
    assert [e["id"] for e in page["items"]] == [execution]
    shown = wrk(api, token, "executions", "show", execution, tenant=tenant)
    assert shown.exit_code == 0 and "score" in shown.stdout and "forecast" in shown.stdout
    cancelled = ok_json(wrk(api, token, "executions", "cancel", execution, "--json", tenant=tenant))
    assert cancelled["status"] == "cancelled"
    again = wrk(api, token, "executions", "cancel", execution, tenant=tenant)
    assert again.exit_code == 4 and "(invalid_status_transition)" in again.stderr
    assert wrk(api, token, "executions", "show", "no-such-execution", tenant=tenant).exit_code == 3


def test_executions_show_watch_follows_an_execution_until_it_ends(api, settings, demo, monkeypatch):
    tenant = _tenant(demo)
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olivia")
    execution = _execution(api, token, tenant, demo)["execution_id"]
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    polls = []

    def cancel_once_watched() -> None:
        # Cancelled only after the watch has polled it live at least twice: the watch must wait for the end.
        until(lambda: len(polls) >= 2, "the watch polling")
        httpx.post(f"{api}/v1/workflow-executions/{execution}/cancel", headers=headers).raise_for_status()

    original = httpx.request

    def counting(method, url, **kwargs):
        if url.endswith(f"/v1/workflow-executions/{execution}"):
            polls.append(url)
        return original(method, url, **kwargs)

    monkeypatch.setattr(httpx, "request", counting)
    canceller = threading.Thread(target=cancel_once_watched)
    canceller.start()
    try:
        result = wrk(api, token, "executions", "show", execution, "--watch", "--interval", "0.2", tenant=tenant)
    finally:
        canceller.join()
    assert result.exit_code == 1, result.output
    assert f"{execution}: queued" in result.stdout and f"{execution}: cancelled" in result.stdout
    assert "ended cancelled" in result.stderr


# --- queue ------------------------------------------------------------------------------------------


def test_queue_show_and_requeue_of_a_dead_trigger(api, settings, demo, engine):
    tenant = _tenant(demo)
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olivia")
    trigger = _execution(api, token, tenant, demo)["trigger_id"]
    shown = wrk(api, token, "queue", "show", str(trigger))
    assert shown.exit_code == 0 and f"Trigger {trigger}" in shown.stdout and "available" in shown.stdout
    not_dead = wrk(api, token, "queue", "requeue", str(trigger))
    assert not_dead.exit_code == 4 and "(conflict)" in not_dead.stderr
    with transaction(engine) as session:
        [claimed] = queue.claim(session, ["workflow"], 1, 60, "test")
        queue.fail(session, claimed.id, claimed.claim_token, "boom", retryable=False)
    assert ok_json(wrk(api, token, "queue", "show", str(trigger), "--json"))["state"] == "dead"
    requeued = ok_json(wrk(api, token, "queue", "requeue", str(trigger), "--json"))
    assert (requeued["state"], requeued["attempts"]) == ("available", 0)
    with transaction(engine) as session:
        [entry] = session.scalars(select(models.AuditLog).where(models.AuditLog.action == "trigger_requeued")).all()
    assert entry.actor_id == "olivia"
    foreign = make_token(settings, tenants=[_tenant(demo, 1)], roles=["ops_admin"])
    assert wrk(api, foreign, "queue", "show", str(trigger)).exit_code == 3


def test_ctrl_c_ends_a_watch_with_exit_130(api, settings, demo):
    tenant = _tenant(demo)
    token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub="olivia")
    execution = _execution(api, token, tenant, demo)["execution_id"]
    env = {**os.environ, "WRK_ORCH_API_URL": api, "WRK_ORCH_TOKEN": token, "WRK_ORCH_TENANT": tenant}
    watcher = subprocess.Popen(
        [str(BIN / "wrk-orch"), "executions", "show", execution, "--watch", "--interval", "0.2"],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and a child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = watcher.stdout.readline()  # the execution still queued: the watch goes on
        assert first.startswith(f"{execution}: queued"), first
        watcher.send_signal(signal.SIGINT)
        _out, err = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 130
    assert err.strip().splitlines()[-1] == "wrk-orch: interrupted"
