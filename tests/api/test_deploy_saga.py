"""The deploy saga: the intent recorded before the platform call, compensation of every
action, Idempotency-Key under real concurrency, the per-request deadline, the saga shared by the API,
the CLI and the job, the request body, and one-call rollback. Over the sandbox's real HTTP, on both
store backends."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest
from sqlalchemy import select

from api.app import create_app
from domain import deploy
from domain.core import lifecycle, models, notifications
from domain.core.lifecycle import Actor, Status
from domain.core.settings import Settings
from domain.core.store import read_transaction, transaction
from domain.deploy import commit as deploy_commit
from orchestration_defs.deploy import reconcile_deployments
from resources.dagster_resources import DatabaseResource, WrkPlatformResource
from resources.retry import RetryPolicy
from resources.wrk import WrkPlatformClient
from tests.api.conftest import bearer, make_token
from tests.api.test_deploy import _binding, _ids, _patch, _workflow_active
from tests.api.test_flow_metrics import prune
from tests.api.test_metrics import assert_none_went_back, scrape, value
from tests.servers import ServerThread, until

LATER = datetime.now(UTC) + timedelta(days=1)  # "now" for a reconciliation after every deadline passed


@pytest.fixture
def settings(sandbox) -> Settings:
    return Settings(
        environment="test",
        wrk_api_url=sandbox.url,
        smtp_port=sandbox.smtp_port,
        retry_base_delay_s=0.01,
        retry_max_delay_s=0.05,
        ops_email="ops@wrk.test",
    )


@pytest.fixture
def client(settings, engine):
    from starlette.testclient import TestClient

    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def platform(sandbox):
    client = WrkPlatformClient(
        sandbox.url, "sandbox-token", read_timeout_s=10, retry=RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
    )
    yield client
    client.close()


def _saga(engine, platform, **kwargs) -> deploy.Saga:
    return deploy.Saga(engine=engine, platform=platform, ops_email="ops@wrk.test", **kwargs)


class Crash(BaseException):
    """The process dies: nothing catches it, nothing after it runs."""


class DiesAfter:
    """The WRK client of a process that is killed right after one platform call returned."""

    def __init__(self, client: WrkPlatformClient, verb: str) -> None:
        self.client, self.verb, self.retry = client, verb, client.retry

    def activate_workflow(self, workflow_id, retry=None, timeout=None):
        self.client.activate_workflow(workflow_id, retry=retry, timeout=timeout)
        if self.verb == "activate":
            raise Crash()

    def deactivate_workflow(self, workflow_id, retry=None, timeout=None):
        self.client.deactivate_workflow(workflow_id, retry=retry, timeout=timeout)
        if self.verb == "deactivate":
            raise Crash()

    def get_workflow(self, workflow_id, retry=None, timeout=None):
        return self.client.get_workflow(workflow_id, retry=retry, timeout=timeout)


def _deployments(engine) -> list[models.Deployment]:
    with transaction(engine) as session:
        return list(session.scalars(select(models.Deployment).order_by(models.Deployment.created_at)))


def _status(engine, version_id) -> str:
    with transaction(engine) as session:
        return session.get(models.AutomationVersion, version_id).status


def _alerts(engine) -> list[dict]:
    with transaction(engine) as session:
        return list(
            session.scalars(select(models.Notification.payload).where(models.Notification.template == "ops_alert"))
        )


def _audit(engine, action) -> list[models.AuditLog]:
    """Audit rows of an action, without the project's own rows (a deploy also moves the project)."""
    with transaction(engine) as session:
        return list(
            session.scalars(
                select(models.AuditLog)
                .where(models.AuditLog.action == action, models.AuditLog.entity_type != "projects")
                .order_by(models.AuditLog.id)
            )
        )


def _active_on_platform(sandbox) -> set[str]:
    return {w["id"] for w in sandbox.http.get("/_sandbox/wrk/workflows").json() if w["active"]}


def _live_workflows(engine) -> set[str]:
    with transaction(engine) as session:
        return set(
            session.scalars(
                select(models.WorkflowBinding.wrk_workflow_id)
                .join(
                    models.AutomationVersion,
                    models.AutomationVersion.id == models.WorkflowBinding.automation_version_id,
                )
                .where(models.AutomationVersion.status == "Live")
            )
        )


def _tenants(demo) -> frozenset[str]:
    return frozenset(t["id"] for t in demo["tenants"])


# --- 1. the intent before the platform; reconciliation finishes or undoes ------------------------------


def test_a_crash_between_activation_and_commit_is_found_and_finished(engine, demo, platform, sandbox):
    """The reproduction: three deploys activated, the process killed before each commit."""
    _tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    ids = [c["id"] for c in candidates]
    dying = _saga(engine, DiesAfter(platform, "activate"))
    for version_id in ids:
        with pytest.raises(Crash):
            deploy.change_status(dying, _tenants(demo), version_id, "Live", deploy.Request(Actor.user("rita")))
    rows = _deployments(engine)
    assert [(r.automation_version_id, r.status, r.action) for r in rows] == [(v, "activating", "deploy") for v in ids]
    assert all(_workflow_active(sandbox, _binding(engine, v).wrk_workflow_id) for v in ids)
    assert [_status(engine, v) for v in ids] == ["Ready to Launch"] * 3

    # While the requests could still be running (before their deadline), reconciliation leaves them.
    report = deploy.reconcile(_saga(engine, platform))
    assert report.finished == report.undone == [] and {r.status for r in _deployments(engine)} == {"activating"}

    report = deploy.reconcile(_saga(engine, platform), now=LATER)
    # The first is finished (the platform did it, nothing moved); the other two found another version
    # Live meanwhile and are undone.
    assert report.finished == [rows[0].id] and report.undone == [rows[1].id, rows[2].id]
    assert [_status(engine, v) for v in ids] == ["Live", "Ready to Launch", "Ready to Launch"]
    assert [r.status for r in _deployments(engine)] == ["committed", "compensated", "compensated"]
    project_workflows = {_binding(engine, v).wrk_workflow_id for v in ids}
    assert _active_on_platform(sandbox) & project_workflows == {_binding(engine, ids[0]).wrk_workflow_id}
    assert _active_on_platform(sandbox) == _live_workflows(engine)
    finished = _audit(engine, "deploy")
    assert [a.entity_id for a in finished] == [ids[0]] and finished[0].actor_id == "rita"
    assert len(_audit(engine, "deployment_finished")) == 1 and len(_audit(engine, "deployment_compensated")) == 2
    assert any(a["summary"].startswith("Deploy reconciliation had to act") for a in _alerts(engine))
    # Once agreed, a second run has nothing to do and raises no alert.
    alerts = len(_alerts(engine))
    assert not deploy.reconcile(_saga(engine, platform), now=LATER).acted and len(_alerts(engine)) == alerts


def test_a_crash_before_the_platform_call_ends_the_row_failed(engine, demo, platform, sandbox, monkeypatch):
    _tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")

    def die(*_args, **_kwargs):
        raise Crash()

    monkeypatch.setattr(deploy_commit, "_move", die)
    with pytest.raises(Crash):
        deploy.change_status(
            _saga(engine, platform), _tenants(demo), candidates[0]["id"], "Live", deploy.Request(Actor.user("rita"))
        )
    monkeypatch.undo()
    assert [r.status for r in _deployments(engine)] == ["requested"]
    report = deploy.reconcile(_saga(engine, platform), now=LATER)
    assert report.undone == [_deployments(engine)[0].id] and _deployments(engine)[0].status == "failed"
    workflow = _binding(engine, candidates[0]["id"]).wrk_workflow_id
    assert sandbox.calls("PATCH", f"/wrk-api/workflows/{workflow}/.*") == [] and not _workflow_active(sandbox, workflow)


def test_reconciliation_deactivates_active_workflows_of_versions_that_are_not_live(
    engine, demo, sandbox, database_url, tmp_path, flow_env
):
    """Whatever put them there: the job compares the whole platform with the store, both ways."""
    _tenant, ready = _ids(demo, "Order Sync", "Ready to Launch")
    _tenant, [live] = _ids(demo, "Invoice Intake", "Live")
    stray = _binding(engine, ready[0]["id"]).wrk_workflow_id
    live_wf = _binding(engine, live["id"]).wrk_workflow_id
    sandbox.http.patch(f"/wrk-api/workflows/{stray}/activate", headers={"Authorization": "Bearer t"})
    sandbox.http.patch(f"/wrk-api/workflows/{live_wf}/deactivate", headers={"Authorization": "Bearer t"})
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = reconcile_deployments.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url), "wrk": WrkPlatformResource()}
        )
    output = result.output_for_node("reconcile_platform_workflows")
    assert stray in output["deactivated"] and live_wf in output["activated"]
    assert not _workflow_active(sandbox, stray) and _workflow_active(sandbox, live_wf)
    assert _active_on_platform(sandbox) == _live_workflows(engine)
    audited = {(a.action, a.details["workflow_id"]) for a in _audit(engine, "workflow_deactivated")}
    assert ("workflow_deactivated", stray) in audited
    assert len(_alerts(engine)) == 1


def test_a_fresh_seed_on_a_fresh_sandbox_gives_reconciliation_nothing_to_do(
    engine, demo, sandbox, database_url, tmp_path, flow_env
):
    """`make run` seeds the demo and starts a fresh sandbox: the seeded Live versions' workflows are
    already active there, so the first scheduled reconciliation neither acts nor alerts ops."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = reconcile_deployments.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url), "wrk": WrkPlatformResource()}
        )
    output = result.output_for_node("reconcile_platform_workflows")
    assert (output["activated"], output["deactivated"], output["failed"]) == ([], [], [])
    assert _active_on_platform(sandbox) == _live_workflows(engine) != set()
    assert _alerts(engine) == []


# --- 2. hints before any platform call; every action compensates ----------------------------------


def test_a_pause_refused_for_stale_hints_never_touches_the_platform(client, settings, demo, engine, sandbox):
    tenant, [live] = _ids(demo, "Invoice Intake", "Live")
    workflow = _binding(engine, live["id"]).wrk_workflow_id
    sandbox.http.patch(f"/wrk-api/workflows/{workflow}/activate", headers={"Authorization": "Bearer t"})
    response = _patch(
        client, settings, tenant, live["id"], {"status": "Paused", "last_known_updated_at": "2020-01-01T00:00:00Z"}
    )
    assert response.status_code == 409 and response.json()["code"] == "concurrency_conflict"
    assert _workflow_active(sandbox, workflow)  # production stays on
    assert [c["path"] for c in sandbox.calls("PATCH")] == [f"/wrk-api/workflows/{workflow}/activate"]
    assert _status(engine, live["id"]) == "Live" and _deployments(engine) == []


def test_a_pause_refused_at_commit_reactivates_the_workflow(client, settings, demo, engine, sandbox, monkeypatch):
    tenant, [live] = _ids(demo, "Invoice Intake", "Live")
    workflow = _binding(engine, live["id"]).wrk_workflow_id
    sandbox.http.patch(f"/wrk-api/workflows/{workflow}/activate", headers={"Authorization": "Bearer t"})

    def moved(*_args, **_kwargs):
        raise deploy.DeployRefused(409, "concurrency_conflict", "the version moved to Archived meanwhile")

    monkeypatch.setattr(deploy_commit, "commit_pause", moved)
    response = _patch(client, settings, tenant, live["id"], {"status": "Paused"})
    assert response.status_code == 409 and response.json()["code"] == "concurrency_conflict"
    assert _workflow_active(sandbox, workflow)
    [row] = _deployments(engine)
    assert (row.action, row.status, row.error["compensation"]) == ("pause", "compensated", "done")


def test_a_failed_compensation_is_alerted_and_left_for_reconciliation(
    client, settings, demo, engine, sandbox, platform, monkeypatch
):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    workflow = _binding(engine, version).wrk_workflow_id

    def moved(*_args, **_kwargs):
        raise deploy.DeployRefused(409, "concurrency_conflict", "the version moved meanwhile")

    monkeypatch.setattr(deploy_commit, "commit_live", moved)
    sandbox.fault("PATCH", f"/wrk-api/workflows/{workflow}/deactivate", count=100, status=503)
    response = _patch(client, settings, tenant, version, {"status": "Live"})
    assert response.status_code == 409
    assert _workflow_active(sandbox, workflow)  # could not be undone...
    [row] = _deployments(engine)
    assert row.status == "activating" and row.error["compensation"] == "failed"  # ...and the row says so
    assert any(a["summary"].startswith("HIGH: could not undo") for a in _alerts(engine))
    monkeypatch.undo()
    sandbox.http.delete("/_sandbox/faults")
    # The platform did activate, but the client was refused: reconciliation undoes, never finishes.
    report = deploy.reconcile(_saga(engine, platform), now=LATER)
    assert report.undone == [row.id] and not _workflow_active(sandbox, workflow)
    assert _deployments(engine)[0].status == "compensated" and _status(engine, version) == "Ready to Launch"


# --- 3. one Idempotency-Key, two concurrent requests ------------------------------------------------


def test_a_second_request_with_the_key_is_in_progress_then_replayed(settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    server = ServerThread(create_app(settings, engine)).start()
    token = bearer(make_token(settings, tenants=[tenant], roles=["ops_release"], sub="rita"))
    headers = {**token, "Idempotency-Key": "deploy-7"}
    url = f"{server.url}/v1/automation-versions/{version}/status"
    body = {"status": "Live", "deployment_reason": "release 7"}
    sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", action="delay", delay_s=1.0)
    results: dict[str, httpx.Response] = {}
    try:
        first = threading.Thread(
            target=lambda: results.setdefault("first", httpx.patch(url, json=body, headers=headers, timeout=60))
        )
        first.start()
        while first.is_alive() and not any(r.status == "activating" for r in _deployments(engine)):
            time.sleep(0.02)  # until the first request is at the (slow) platform
        second = httpx.patch(url, json=body, headers=headers, timeout=60)
        first.join()
        third = httpx.patch(url, json=body, headers=headers, timeout=60)
    finally:
        server.stop()
    assert results["first"].status_code == 200, results["first"].text
    assert second.status_code == 409 and second.json()["code"] == "request_in_progress"
    assert second.headers["retry-after"] == "1"
    assert third.status_code == 200 and third.json() == results["first"].json()
    assert third.headers["idempotent-replayed"] == "true"
    assert len(_audit(engine, "deploy")) == 1 and len(sandbox.calls("PATCH")) == 1


def test_many_concurrent_requests_with_one_key_deploy_once(settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[1]["id"]
    server = ServerThread(create_app(settings, engine)).start()
    headers = {
        **bearer(make_token(settings, tenants=[tenant], roles=["ops_release"], sub="rita")),
        "Idempotency-Key": "same-key",
    }
    barrier = threading.Barrier(8)

    def send(_n: int) -> httpx.Response:
        barrier.wait()
        return httpx.patch(
            f"{server.url}/v1/automation-versions/{version}/status",
            json={"status": "Live"},
            headers=headers,
            timeout=60,
        )

    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
    finally:
        server.stop()
    outcomes = [(a.status_code, a.json().get("code")) for a in answers]
    assert set(outcomes) <= {(200, None), (409, "request_in_progress")}, outcomes
    assert outcomes.count((200, None)) >= 1
    assert len(_audit(engine, "deploy")) == 1 and len(_deployments(engine)) == 1
    assert len(sandbox.calls("PATCH", "/wrk-api/workflows/.*/activate")) == 1


# --- 4. a deadline per request ---------------------------------------------------------------------


def test_a_slow_platform_gets_503_within_the_deadline_and_reconciliation_ends_it(
    settings, demo, engine, sandbox, platform
):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    fast = settings.model_copy(update={"deploy_deadline_s": 2.0})
    sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", count=10, status=429, headers={"Retry-After": "300"})
    from starlette.testclient import TestClient

    with TestClient(create_app(fast, engine), raise_server_exceptions=False) as client:
        response = _patch(client, fast, tenant, version, {"status": "Live"}, **{"Idempotency-Key": "slow-1"})
        assert response.status_code == 503 and response.json()["code"] == "deadline_exceeded"
        assert response.headers["retry-after"] == "300"  # what the platform asked for
        assert len(sandbox.calls("PATCH")) == 1  # no four attempts of 300 s each
        [row] = _deployments(engine)
        assert row.status == "activating" and row.error["code"] == "deadline_exceeded"
        assert _status(engine, version) == "Ready to Launch"
        again = _patch(client, fast, tenant, version, {"status": "Live"}, **{"Idempotency-Key": "slow-1"})
        assert again.status_code == 409 and again.json()["code"] == "request_in_progress"
        sandbox.http.delete("/_sandbox/faults")
        report = deploy.reconcile(_saga(engine, platform), now=LATER)
        assert report.undone == [row.id]  # the platform never activated: undone, the version stays
        replay = _patch(client, fast, tenant, version, {"status": "Live"}, **{"Idempotency-Key": "slow-1"})
        assert replay.status_code == 502 and replay.json()["code"] == "deployment_failed"
    assert _status(engine, version) == "Ready to Launch"
    assert _active_on_platform(sandbox) == _live_workflows(engine)


def test_an_activation_that_lands_after_the_deadline_is_finished_by_reconciliation(
    settings, demo, engine, sandbox, platform
):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    workflow = _binding(engine, version).wrk_workflow_id
    fast = settings.model_copy(update={"deploy_deadline_s": 1.0})
    sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", count=1, action="delay", delay_s=2.0)
    from starlette.testclient import TestClient

    with TestClient(create_app(fast, engine), raise_server_exceptions=False) as client:
        response = _patch(client, fast, tenant, version, {"status": "Live", "deployment_reason": "slow day"})
    assert response.status_code == 503 and response.json()["code"] == "deadline_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    while not sandbox.calls("PATCH"):  # the platform completes the activation the client gave up on
        time.sleep(0.05)
    assert _workflow_active(sandbox, workflow) and _status(engine, version) == "Ready to Launch"
    report = deploy.reconcile(_saga(engine, platform), now=LATER)
    assert report.finished == [_deployments(engine)[0].id]
    assert _status(engine, version) == "Live" and _deployments(engine)[0].status == "committed"
    [entry] = _audit(engine, "deploy")
    assert entry.reason == "slow day" and entry.details["invoked_via"] == "api+reconciliation"


# --- 5. one saga: the API, the CLI and the job ----------------------------------------------------


def test_the_cli_deploys_and_reconciles_through_the_same_saga(demo, engine, sandbox, flow_env, capsys):
    from cli.main import main

    _tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    version = candidates[0]["id"]
    assert main(["deploy", version, "--status", "Live", "--reason", "from the CLI", "--actor", "olivia"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "Live" and shown["deployed_by"] == "olivia"
    [row] = _deployments(engine)
    assert (row.status, row.invoked_via, row.actor_id) == ("committed", "cli", "olivia")
    assert _workflow_active(sandbox, _binding(engine, version).wrk_workflow_id)
    assert main(["deploy", version, "--status", "Paused"]) == 0
    capsys.readouterr()
    assert main(["deploy", candidates[1]["id"], "--status", "Paused"]) == 1
    assert json.loads(capsys.readouterr().out)["code"] == "invalid_status_transition"
    assert main(["reconcile-deployments"]) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == []


# --- 6. the request body -------------------------------------------------------------------------


def test_unknown_fields_are_refused_naming_them(client, settings, demo, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    response = _patch(client, settings, tenant, candidates[0]["id"], {"status": "Live", "reson": "typo", "x": 1})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    assert {e["field"] for e in response.json()["errors"]} == {"reson", "x"}
    assert "reson" in response.json()["detail"] and sandbox.calls("PATCH") == []


def test_notes_are_audited_with_the_reason(client, settings, demo, engine):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    body = {"status": "Live", "deployment_reason": "go-live", "notes": "approved by CAB-12"}
    assert _patch(client, settings, tenant, candidates[0]["id"], body).status_code == 200
    [entry] = _audit(engine, "deploy")
    assert entry.reason == "go-live"
    assert entry.details["deployment_reason"] == "go-live" and entry.details["notes"] == "approved by CAB-12"


def test_a_409_names_statuses_as_text(client, settings, demo):
    tenant, [draft] = _ids(demo, "Invoice Intake", "Draft")
    response = _patch(client, settings, tenant, draft["id"], {"status": "Live"})
    assert response.status_code == 409
    problem = response.json()
    assert problem["detail"] == f"automation_versions {draft['id']}: Draft cannot move to Live"
    assert (problem["current_status"], problem["requested_status"]) == ("Draft", "Live")
    assert "<" not in json.dumps(problem) and "'" not in problem["detail"]


# --- 7. one-call rollback ------------------------------------------------------------------------


def _rollback(client, settings, tenant, project_id, body):
    token = make_token(settings, tenants=[tenant], roles=["ops_release"], sub="rita")
    return client.post(f"/v1/projects/{project_id}/rollback", json=body, headers=bearer(token))


def _project_id(demo, name) -> str:
    return next(p for p in demo["tenants"][0]["projects"] if p["name"] == name)["id"]


def test_rollback_makes_the_previous_live_version_live_again(client, settings, demo, engine, sandbox):
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    first, second = candidates[0]["id"], candidates[1]["id"]
    project = _project_id(demo, "Order Sync")
    nothing = _rollback(client, settings, tenant, project, {"reason": "no history yet"})
    assert nothing.status_code == 409 and nothing.json()["code"] == "nothing_to_roll_back"
    assert _patch(client, settings, tenant, first, {"status": "Live"}).status_code == 200
    assert _patch(client, settings, tenant, second, {"status": "Live"}).status_code == 200

    back = _rollback(client, settings, tenant, project, {"reason": "v2 breaks invoices"})
    assert back.status_code == 200, back.text
    assert back.json()["id"] == first and back.json()["status"] == "Live"
    assert (_status(engine, first), _status(engine, second)) == ("Live", "Archived")
    assert _workflow_active(sandbox, _binding(engine, first).wrk_workflow_id)
    assert not _workflow_active(sandbox, _binding(engine, second).wrk_workflow_id)
    [entry] = _audit(engine, "rollback")
    assert (entry.entity_id, entry.previous_status, entry.new_status, entry.reason) == (
        first,
        "Archived",
        "Live",
        "v2 breaks invoices",
    )
    assert entry.details["previous_live_version_id"] == second
    # The ops e-mail says what happened: a rollback, not a deployment (the earlier two: deployments).
    with read_transaction(engine) as session:
        mails = session.scalars(
            select(models.Notification).where(models.Notification.template == "deployment_success")
        ).all()
        rendered = [notifications.render(m.template, m.payload) for m in mails]
    assert sorted(subject.split(":")[0] for subject, _ in rendered) == ["Deployed", "Deployed", "Rolled back"]
    [body] = [body for subject, body in rendered if subject.startswith("Rolled back")]
    assert " rolled back to Order Sync v" in body and first in body

    # Rolling back again returns to the version that was Live before; an explicit target works too.
    assert _rollback(client, settings, tenant, project, {}).json()["id"] == second
    explicit = _rollback(client, settings, tenant, project, {"to_version_id": first, "reason": "pick"})
    assert explicit.status_code == 200 and explicit.json()["id"] == first
    project_workflows = {_binding(engine, c["id"]).wrk_workflow_id for c in candidates}
    assert _active_on_platform(sandbox) & project_workflows == {_binding(engine, first).wrk_workflow_id}
    not_archived = _rollback(client, settings, tenant, project, {"to_version_id": candidates[2]["id"]})
    assert not_archived.status_code == 409 and not_archived.json()["code"] == "invalid_status_transition"
    unknown = _rollback(client, settings, tenant, project, {"to_version": first})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "to_version"


def test_archived_to_live_only_through_rollback(client, settings, demo, engine):
    tenant, [archived] = _ids(demo, "Invoice Intake", "Archived")
    refused = _patch(client, settings, tenant, archived["id"], {"status": "Live"})
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_status_transition"
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, archived["id"])
        assert not lifecycle.allowed(version, Status.LIVE)
        assert lifecycle.allowed(version, Status.LIVE, action="rollback")
        with pytest.raises(lifecycle.InvalidStatusTransition):
            lifecycle.transition(session, version, Status.LIVE, actor=Actor.user("x"), action="deploy")
        session.rollback()


# --- 8. a later commit wins on the platform too ---------------------------------------------------


class Ordered:
    """The WRK client of one request whose first call of `verb` waits for `before`, is made, sets
    `made`, then waits for `after`: a test puts two requests' platform calls in the order it wants,
    without timing."""

    def __init__(self, client: WrkPlatformClient, verb: str, before=None, made=None, after=None) -> None:
        self.client, self.verb, self.retry = client, verb, client.retry
        self.before, self.made, self.after = before, made or threading.Event(), after
        self.held = False

    def _call(self, verb, call, workflow_id, retry, timeout):
        if verb != self.verb or self.held:
            return call(workflow_id, retry=retry, timeout=timeout)
        self.held = True
        assert self.before is None or self.before.wait(600)
        answer = call(workflow_id, retry=retry, timeout=timeout)
        self.made.set()
        assert self.after is None or self.after.wait(600)
        return answer

    def activate_workflow(self, workflow_id, retry=None, timeout=None):
        return self._call("activate", self.client.activate_workflow, workflow_id, retry, timeout)

    def deactivate_workflow(self, workflow_id, retry=None, timeout=None):
        return self._call("deactivate", self.client.deactivate_workflow, workflow_id, retry, timeout)

    def get_workflow(self, workflow_id, retry=None, timeout=None):
        return self.client.get_workflow(workflow_id, retry=retry, timeout=timeout)


def _deploy_in_thread(engine, platform, demo, version_id) -> tuple[threading.Thread, dict[str, deploy.Outcome]]:
    answers: dict[str, deploy.Outcome] = {}

    def run() -> None:
        saga = _saga(engine, platform)
        request = deploy.Request(Actor.user("rita"))
        answers["deploy"] = deploy.change_status(saga, _tenants(demo), version_id, "Live", request)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def test_a_deactivation_landing_after_a_rollback_committed_is_undone_before_the_deploy_answers(
    engine, demo, platform, sandbox
):
    """Deploy X archives V and sends "deactivate V"; a rollback makes V Live again meanwhile; the
    deactivation lands after it. The deploy sees the store wants V active and activates it again."""
    _tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    v, x = candidates[0]["id"], candidates[1]["id"]
    plain = _saga(engine, platform)
    deploy.change_status(plain, _tenants(demo), v, "Live", deploy.Request(Actor.user("rita")))
    rolled_back = threading.Event()
    deploying, answers = _deploy_in_thread(engine, Ordered(platform, "deactivate", before=rolled_back), demo, x)
    until(lambda: _status(engine, x) == "Live", "the deploy of X to commit")
    back = deploy.rollback(plain, _tenants(demo), _project_id(demo, "Order Sync"), v, deploy.Request(Actor.user("o")))
    rolled_back.set()
    deploying.join()
    assert answers["deploy"].status == back.status == 200
    assert (_status(engine, v), _status(engine, x)) == ("Live", "Archived")
    assert _workflow_active(sandbox, _binding(engine, v).wrk_workflow_id)
    assert not _workflow_active(sandbox, _binding(engine, x).wrk_workflow_id)
    assert _alerts(engine) == []


def test_a_rollbacks_activation_undone_before_it_commits_is_redone_before_it_answers(engine, demo, platform, sandbox):
    """A rollback to V activates V; a deploy that archived V earlier deactivates V after that, before
    the rollback commits. The rollback checks its own workflow after its commit and activates it."""
    _tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    v, x = candidates[0]["id"], candidates[1]["id"]
    plain = _saga(engine, platform)
    deploy.change_status(plain, _tenants(demo), v, "Live", deploy.Request(Actor.user("rita")))
    activated, deactivated = threading.Event(), threading.Event()
    held_deploy = Ordered(platform, "deactivate", before=activated, made=deactivated)
    deploying, answers = _deploy_in_thread(engine, held_deploy, demo, x)
    until(lambda: _status(engine, x) == "Live", "the deploy of X to commit")
    rolling_back = _saga(engine, Ordered(platform, "activate", made=activated, after=deactivated))
    back = deploy.rollback(
        rolling_back, _tenants(demo), _project_id(demo, "Order Sync"), v, deploy.Request(Actor.user("o"))
    )
    deploying.join()
    assert answers["deploy"].status == back.status == 200
    assert (_status(engine, v), _status(engine, x)) == ("Live", "Archived")
    assert _workflow_active(sandbox, _binding(engine, v).wrk_workflow_id)
    assert not _workflow_active(sandbox, _binding(engine, x).wrk_workflow_id)
    assert _alerts(engine) == []


# --- /metrics ----------------------------------------------------------------------------------------


def test_deploy_figures_by_action_and_outcome_compensations_and_reconciliation_never_go_back(
    client, settings, demo, engine, sandbox, platform, monkeypatch
):
    before = scrape(engine)
    tenant, candidates = _ids(demo, "Order Sync", "Ready to Launch")
    assert _patch(client, settings, tenant, candidates[0]["id"], {"status": "Live"}).status_code == 200
    _tenant, [live] = _ids(demo, "Invoice Intake", "Live")

    def moved(*_args, **_kwargs):
        raise deploy.DeployRefused(409, "concurrency_conflict", "the version moved to Archived meanwhile")

    monkeypatch.setattr(deploy_commit, "commit_pause", moved)
    assert _patch(client, settings, tenant, live["id"], {"status": "Paused"}).status_code == 409  # undone
    monkeypatch.undo()
    stray = _binding(engine, candidates[1]["id"]).wrk_workflow_id  # a version that is not Live, running
    sandbox.http.patch(f"/wrk-api/workflows/{stray}/activate", headers={"Authorization": "Bearer t"})
    report = deploy.reconcile(_saga(engine, platform))
    assert report.deactivated == [stray] and report.activated == []
    found = scrape(engine)

    def added(name: str, **labels: str) -> float:
        return value(found, name, **labels) - value(before, name, **labels)

    assert added("wrk_deploy_actions_total", action="deploy", outcome="succeeded") == 1
    assert added("wrk_deploy_actions_total", action="pause", outcome="refused") == 1
    assert added("wrk_deploy_actions_total", action="rollback", outcome="failed") == 0
    assert added("wrk_deploy_compensations_total") == 1
    assert added("wrk_deploy_reconciliation_acts_total", act="deactivated") == 1
    assert added("wrk_deploy_reconciliation_acts_total", act="activated") == 0
    assert added("wrk_deploy_drift_total") == 1

    prune(engine, models.Deployment)
    assert_none_went_back(found, scrape(engine))
