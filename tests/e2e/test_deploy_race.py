"""Concurrent deploys and rollbacks of one project against a slow platform, served by two API worker
processes: once every request has answered, the platform runs exactly the Live version's workflow,
with no reconciliation run. Deactivations are slower than activations, so a deploy's post-commit
deactivation of the version it archived is still in flight when a rollback makes that version Live
again (the later commit must win on the platform too).

Bounded in rounds, not in time: the waits are for the answers.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select

from cli.demo import demo_version, seed_demo
from domain import deploy
from domain.core import models
from domain.core.lifecycle import Actor, Status
from domain.core.settings import Settings
from domain.core.store import transaction
from resources.retry import RetryPolicy
from resources.wrk import WrkPlatformClient
from tests.api.conftest import bearer, make_token
from tests.servers import Processes

ROUNDS = 4  # per store backend
CLIENTS = 6  # requests per round: two deploys of fresh versions, the rest rollbacks
SLOW_CALLS = 100_000


def _order_sync(engine) -> tuple[str, str, dict[str, str]]:
    """The project's tenant, id, and each version's status by id."""
    with transaction(engine) as session:
        project = session.scalars(select(models.Project).where(models.Project.name == "Order Sync")).one()
        versions = session.scalars(
            select(models.AutomationVersion).where(models.AutomationVersion.project_id == project.id)
        ).all()
        return project.tenant_id, project.id, {v.id: v.status for v in versions}


def _workflows(engine, version_ids) -> dict[str, str]:
    with transaction(engine) as session:
        return dict(
            session.execute(
                select(models.WorkflowBinding.automation_version_id, models.WorkflowBinding.wrk_workflow_id).where(
                    models.WorkflowBinding.automation_version_id.in_(list(version_ids))
                )
            ).all()
        )


def _platform_disagreements(engine, sandbox) -> list[tuple[str, str, bool]]:
    """(version, status, active on the platform) for every version of the project whose workflow's
    state on the platform is not what its status wants."""
    _tenant, _project, statuses = _order_sync(engine)
    workflows = _workflows(engine, statuses)
    auth = {"Authorization": "Bearer t"}
    found = []
    for version_id, status in statuses.items():
        active = sandbox.http.get(f"/wrk-api/workflows/{workflows[version_id]}", headers=auth).json()["active"]
        if active != (status == Status.LIVE.value):
            found.append((version_id, status, active))
    return found


def _round_requests(rng: random.Random, engine) -> list[tuple[str, str, dict[str, Any]]]:
    """Two deploys of fresh versions and rollbacks (to the previous Live version, or to a named
    Archived one), shuffled."""
    fresh = []
    with transaction(engine) as session:
        for _ in range(2):
            fresh.append(demo_version(session, Status.READY_TO_LAUNCH, "Order Sync")["id"])
    _tenant, project, statuses = _order_sync(engine)
    archived = [v for v, status in statuses.items() if status == Status.ARCHIVED.value]
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("PATCH", f"/v1/automation-versions/{v}/status", {"status": "Live"}) for v in fresh
    ]
    for _ in range(CLIENTS - len(requests)):
        to = {"to_version_id": rng.choice(archived)} if archived and rng.random() < 0.3 else {}
        requests.append(("POST", f"/v1/projects/{project}/rollback", {"reason": "race", **to}))
    rng.shuffle(requests)
    return requests


def _send(url: str, token: str, method: str, path: str, body: dict[str, Any], after_s: float) -> httpx.Response:
    time.sleep(after_s)  # spread over one deactivation, so requests plan after others commit
    with httpx.Client(base_url=url, headers=bearer(token), timeout=120) as http:
        return http.request(method, path, json=body)


def test_concurrent_deploys_and_rollbacks_leave_the_platform_running_the_live_version(databases, sandbox, tmp_path):
    rng = random.Random(20261207)
    engine = databases.migrated()
    with transaction(engine) as session:
        seed_demo(session)
    tenant, _project, statuses = _order_sync(engine)
    platform = WrkPlatformClient(
        sandbox.url, "sandbox-token", read_timeout_s=10, retry=RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)
    )
    saga = deploy.Saga(engine=engine, platform=platform, ops_email="ops@wrk.test")
    # Start in agreement with a Live version and an Archived one to roll back to.
    for version_id in [v for v, status in statuses.items() if status == Status.READY_TO_LAUNCH.value][:2]:
        deploy.change_status(saga, frozenset({tenant}), version_id, "Live", deploy.Request(Actor.user("t")))
    platform.close()
    assert _platform_disagreements(engine, sandbox) == []

    env = {
        "ENVIRONMENT": "test",
        "DATABASE_URL": databases.url(engine),
        "WRK_API_URL": sandbox.url,
        "RETRY_BASE_DELAY_S": "0.01",
        "RETRY_MAX_DELAY_S": "0.05",
        "OPS_EMAIL": "ops@wrk.test",
    }
    token = make_token(Settings(environment="test"), tenants=[tenant], roles=["ops_release"], sub="racer")
    log = (tmp_path / f"api-{databases.backend}.log").open("w")
    stack = Processes(env, log)
    try:
        url = stack.uvicorn("api.app:create_app", workers=2)
        for round_number in range(ROUNDS):
            deactivation_s = rng.uniform(0.6, 1.2)
            sandbox.http.delete("/_sandbox/faults")
            sandbox.fault("PATCH", "/wrk-api/workflows/.*/deactivate", count=SLOW_CALLS, action="delay",
                          delay_s=deactivation_s)  # fmt: skip
            sandbox.fault("PATCH", "/wrk-api/workflows/.*/activate", count=SLOW_CALLS, action="delay", delay_s=0.1)
            requests = _round_requests(rng, engine)
            with ThreadPoolExecutor(len(requests)) as pool:
                sent = [pool.submit(_send, url, token, *r, rng.uniform(0, deactivation_s)) for r in requests]
                answers = [future.result() for future in sent]
            outcomes = [(a.status_code, a.json().get("code")) for a in answers]
            assert all(status in (200, 409) for status, _code in outcomes), outcomes
            # Every request has answered: the platform agrees with the store, nothing left to reconcile.
            _tenant, _project, statuses = _order_sync(engine)
            assert list(statuses.values()).count(Status.LIVE.value) == 1, statuses
            assert _platform_disagreements(engine, sandbox) == [], (round_number, outcomes)
    finally:
        stack.stop()
        log.close()
        databases.release(engine)
