"""The deploy kill test: the API, a real uvicorn process, is killed with SIGKILL at a random
point while concurrent deploys, resumes, pauses and rollbacks run against a slow platform (the
sandbox delays every activation and deactivation). Then reconciliation runs. Every time, the platform
and the store agree: at most one Live version per project (exactly one in the project that only gets
deploys and rollbacks), no deployment left open, and the active workflows on the platform are exactly
the Live versions' workflows.

Bounded in iterations, not in time: the kill point is random, the waits are for conditions.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from domain import deploy, models
from domain.demo import seed_demo
from domain.lifecycle import Actor
from domain.settings import Settings
from domain.store import transaction
from resources.retry import RetryPolicy
from resources.wrk import WrkPlatformClient
from tests.api.conftest import bearer, make_token
from tests.servers import Processes

ITERATIONS = 3  # per store backend
LATER = datetime.now(UTC) + timedelta(days=1)


def _versions(demo: dict[str, Any], project: str) -> tuple[str, str, list[dict[str, Any]]]:
    tenant = demo["tenants"][0]
    found = next(p for p in tenant["projects"] if p["name"] == project)
    return tenant["id"], found["id"], found["versions"]


SLOW_CALLS = 100_000


def _in_flight(sandbox, before: int) -> int:
    """Platform calls the sandbox is still delaying: every PATCH takes one delay when it arrives and is
    logged when it is done (`before`: PATCH calls logged before the delay was injected)."""
    [slow] = sandbox.http.get("/_sandbox/faults").json()
    return (SLOW_CALLS - slow["count"]) - (len(sandbox.calls("PATCH")) - before)


def _load(url: str, token: str, demo: dict[str, Any], stop: threading.Event, seed: int) -> None:
    """One client: random status requests and rollbacks until the API dies."""
    rng = random.Random(seed)
    _tenant, order_sync, order_versions = _versions(demo, "Order Sync")
    _tenant, _invoice, invoice_versions = _versions(demo, "Invoice Intake")
    invoice = [v["id"] for v in invoice_versions if v["status"] in ("Live", "Paused")]
    keys = [f"k-{seed % 3}-{n}" for n in range(4)]  # shared between clients: same-key races happen
    with httpx.Client(base_url=url, headers=bearer(token), timeout=30) as http:
        while not stop.is_set():
            headers = {"Idempotency-Key": rng.choice(keys) + uuid.uuid4().hex[:2]} if rng.random() < 0.3 else {}
            choice = rng.random()
            try:
                if choice < 0.55:
                    version = rng.choice(order_versions)["id"]
                    http.patch(f"/v1/automation-versions/{version}/status", json={"status": "Live"}, headers=headers)
                elif choice < 0.85:
                    version = rng.choice(invoice)
                    status = rng.choice(["Live", "Paused"])
                    http.patch(f"/v1/automation-versions/{version}/status", json={"status": status}, headers=headers)
                else:
                    http.post(f"/v1/projects/{order_sync}/rollback", json={"reason": "kill test"}, headers=headers)
            except httpx.HTTPError:
                if stop.is_set():
                    return
                time.sleep(0.05)  # the API is dead or not up: the test is about to stop us


def _check_agreement(engine, sandbox, must_have_live: set[str]) -> None:
    with transaction(engine) as session:
        live_per_project = dict(
            session.execute(
                select(models.AutomationVersion.project_id, func.count())
                .where(models.AutomationVersion.status == "Live")
                .group_by(models.AutomationVersion.project_id)
            ).all()
        )
        live_workflows = set(
            session.scalars(
                select(models.WorkflowBinding.wrk_workflow_id)
                .join(
                    models.AutomationVersion,
                    models.AutomationVersion.id == models.WorkflowBinding.automation_version_id,
                )
                .where(models.AutomationVersion.status == "Live")
            )
        )
        open_rows = session.scalar(
            select(func.count()).select_from(models.Deployment).where(models.Deployment.status.in_(deploy.OPEN))
        )
    assert all(n == 1 for n in live_per_project.values()), live_per_project
    assert must_have_live <= set(live_per_project), (must_have_live, live_per_project)
    active = {w["id"] for w in sandbox.http.get("/_sandbox/wrk/workflows").json() if w["active"]}
    assert active == live_workflows
    assert open_rows == 0


def test_sigkill_during_concurrent_deploys_then_reconciliation_agrees(databases, sandbox, tmp_path):
    rng = random.Random(20261123)
    settings = Settings(environment="test")
    for iteration in range(ITERATIONS):
        engine = databases.migrated()
        sandbox.reset()
        with transaction(engine) as session:
            demo = seed_demo(session)
        platform = WrkPlatformClient(
            sandbox.url, "sandbox-token", read_timeout_s=10, retry=RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
        )
        saga = deploy.Saga(engine=engine, platform=platform, ops_email="ops@wrk.test", deadline_s=30)
        tenant, order_sync, order_versions = _versions(demo, "Order Sync")
        # Start in agreement, with a Live version in each of the two projects under load.
        deploy.change_status(
            saga, frozenset({tenant}), order_versions[0]["id"], "Live", deploy.Request(Actor.user("t"))
        )
        deploy.reconcile(saga)
        # Order Sync only gets deploys and rollbacks: it keeps exactly one Live version. Invoice Intake
        # is also paused, so it may end with none.
        must_have_live = {order_sync}
        _check_agreement(engine, sandbox, must_have_live)

        delay = rng.uniform(0.05, 0.4)
        before = len(sandbox.calls("PATCH"))
        sandbox.fault("PATCH", "/wrk-api/workflows/.*", count=SLOW_CALLS, action="delay", delay_s=delay)
        env = {
            "ENVIRONMENT": "test",
            "DATABASE_URL": databases.url(engine),
            "WRK_API_URL": sandbox.url,
            "RETRY_BASE_DELAY_S": "0.01",
            "RETRY_MAX_DELAY_S": "0.05",
            "DEPLOY_DEADLINE_S": "2",
            "OPS_EMAIL": "ops@wrk.test",
        }
        log = (tmp_path / f"api-{databases.backend}-{iteration}.log").open("w")
        stack = Processes(env, log)
        try:
            url = stack.uvicorn("api.app:create_app")
            api = stack.procs[-1]
            token = make_token(settings, tenants=[tenant], roles=["ops_admin"], sub=f"killer-{iteration}")
            stop = threading.Event()
            clients = [
                threading.Thread(target=_load, args=(url, token, demo, stop, iteration * 10 + n)) for n in range(6)
            ]
            for client in clients:
                client.start()
            # Kill at a random point once deploys are under way (at least one platform call made).
            while _in_flight(sandbox, before) == 0 and len(sandbox.calls("PATCH")) == before:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 2.5))
            api.kill()  # SIGKILL: no cleanup, no compensation, nothing after it runs
            api.wait()
            stop.set()
            for client in clients:
                client.join()
        finally:
            stack.stop()
            log.close()
        while _in_flight(sandbox, before) > 0:  # platform calls the dead API started still land
            time.sleep(0.05)
        sandbox.http.delete("/_sandbox/faults")

        with transaction(engine) as session:
            by_status = dict(
                session.execute(select(models.Deployment.status, func.count()).group_by(models.Deployment.status)).all()
            )
        report = deploy.reconcile(saga, now=LATER)
        assert report.failed == [], report
        print(  # figures for the issue note (pytest -s)
            json.dumps(
                {
                    "backend": databases.backend,
                    "iteration": iteration,
                    "delay_s": round(delay, 3),
                    "deployments_at_kill": by_status,
                    "reconciled": {k: len(v) for k, v in report.as_dict().items() if isinstance(v, list)},
                }
            )
        )
        _check_agreement(engine, sandbox, must_have_live)
        assert not deploy.reconcile(saga, now=LATER).acted  # converged in one run
        platform.close()
