"""The README's recipes work on every run: each takes a fresh demo version (`wrk-orch demo-version`), and
`wrk-orch seed-demo --reset` puts the demo back as first seeded without ever reusing a trigger id."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from api.app import create_app
from cli.demo import demo_version, reset_demo, seed_demo
from domain.build import build
from domain.core import models
from domain.core.lifecycle import Actor, Status
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.queue import queue
from tests.api.conftest import bearer, make_token
from tests.cli.parsing import accepted


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "development"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, check=True
    )


def test_cli_demo_version_prints_a_fresh_id_each_time_and_reset_restores_the_seed(databases):
    url = databases.url(databases.migrated())
    first = _cli("demo-version", "--status", "Draft", database_url=url).stdout.strip()
    second = _cli("demo-version", "--status", "Draft", database_url=url).stdout.strip()
    assert first and second and first != second
    ready = json.loads(_cli("demo-version", "--status", "Ready to Launch", "--json", database_url=url).stdout)
    assert ready["status"] == "Ready to Launch" and ready["project"] == "Order Sync" and ready["workflow_binding_id"]
    # Refused: the demo projects have their one Live version.
    assert not accepted(["demo-version", "--status", "Live"])
    reset = json.loads(_cli("seed-demo", "--reset", database_url=url).stdout)
    with transaction(databases.migrated()) as session:
        assert reset == seed_demo(session)  # ids derive from names: the same as a first seed anywhere
    ids = {v["id"] for t in reset["tenants"] for p in t["projects"] for v in p["versions"]}
    assert first not in ids and second not in ids and ready["id"] not in ids


def test_a_fresh_version_is_walked_through_the_lifecycle_with_the_binding_its_status_needs(engine):
    with transaction(engine) as session:
        ready = demo_version(session, Status.READY_TO_LAUNCH)
        draft = demo_version(session, Status.DRAFT)
    with transaction(engine) as session:
        binding = session.get(models.WorkflowBinding, ready["workflow_binding_id"])
        assert binding.status == "active" and binding.wrk_workflow_id.startswith("wf_demo_")
        trail = session.scalars(
            select(models.AuditLog.new_status)
            .where(models.AuditLog.entity_id == ready["id"])
            .order_by(models.AuditLog.id)
        ).all()
    assert trail == ["Build in Progress", "QA & Testing", "Ready to Launch"]
    assert draft["status"] == "Draft" and draft["workflow_binding_id"] is None
    with transaction(engine) as session, pytest.raises(ValueError, match="cannot be 'Live'"):
        demo_version(session, Status.LIVE)


@pytest.fixture
def settings(sandbox) -> Settings:
    return Settings(environment="test", wrk_api_url=sandbox.url, smtp_port=sandbox.smtp_port, ops_email="ops@wrk.test")


def test_the_build_and_deploy_recipes_work_twice_in_a_row_and_after_a_reset(engine, settings):
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        for round_ in range(3):
            if round_ == 2:
                with transaction(engine) as session:
                    reset_demo(session)
            with transaction(engine) as session:
                draft = demo_version(session, Status.DRAFT)
                ready = demo_version(session, Status.READY_TO_LAUNCH)
            builder = make_token(settings, tenants=[draft["tenant_id"]], roles=["ops_build"], sub="bruno")
            built = client.post(f"/v1/automation-versions/{draft['id']}/build", headers=bearer(builder))
            assert built.status_code == 202, built.text
            assert built.json()["status"] == "Build in Progress"
            releaser = make_token(settings, tenants=[ready["tenant_id"]], roles=["ops_release"], sub="rita")
            deployed = client.patch(
                f"/v1/automation-versions/{ready['id']}/status",
                json={"status": "Live", "last_known_status": "Ready to Launch", "deployment_reason": "go-live"},
                headers={**bearer(releaser), "Idempotency-Key": f"go-live-{ready['id']}"},
            )
            assert deployed.status_code == 200, deployed.text
            assert deployed.json()["status"] == "Live"


def test_reset_keeps_trigger_rows_so_no_trigger_id_comes_back(engine):
    with transaction(engine) as session:
        seed_demo(session)
        draft = demo_version(session, Status.DRAFT)
    with transaction(engine) as session:
        version = session.get(models.AutomationVersion, draft["id"])
        trigger_id = build.request_build(session, version, Actor.user("ops-1"))
    with transaction(engine) as session:
        reset_demo(session)
    with transaction(engine) as session:
        row = session.get(models.TriggerQueue, trigger_id)
        assert row is not None and row.state == "cancelled"  # its version is gone: it will not run
        assert session.get(models.AutomationVersion, draft["id"]) is None
        tenant_id = row.tenant_id
        next_id = queue.enqueue(
            session,
            "build",
            tenant_id,
            {"tenant_id": tenant_id, "project_id": "p", "automation_version_id": "v", "workflow_binding_id": "b"},
        )
        assert next_id > trigger_id
        assert session.scalar(select(func.count()).select_from(models.TriggerQueue)) == 2
