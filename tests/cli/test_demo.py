from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
from sqlalchemy import func, select

from cli.demo import seed_demo
from domain.core import models
from domain.core.lifecycle import Status
from domain.core.settings import Settings
from domain.core.store import transaction


def _counts(session) -> dict[str, int]:
    return {
        name: session.scalar(select(func.count()).select_from(model))
        for name, model in [
            ("tenants", models.Tenant),
            ("versions", models.AutomationVersion),
            ("bindings", models.WorkflowBinding),
            ("audit", models.AuditLog),
        ]
    }


def test_seed_demo_makes_two_tenants_every_status_and_deployable_candidates(engine):
    with transaction(engine) as session:
        out = seed_demo(session)
    first, second = out["tenants"]
    assert first["id"] != second["id"]
    assert all({"id", "email", "roles"} <= set(u) for t in out["tenants"] for u in t["users"])
    statuses = {v["status"] for p in first["projects"] for v in p["versions"]}
    assert statuses == {s.value for s in Status}
    candidates = [p for p in first["projects"] if sum(v["status"] == "Ready to Launch" for v in p["versions"]) >= 3]
    assert candidates
    with transaction(engine) as session:
        for v in candidates[0]["versions"]:
            binding = session.get(models.WorkflowBinding, v["workflow_binding_id"])
            assert binding.status == "active" and binding.wrk_workflow_id
        # statuses were reached through the lifecycle, so each has its audit trail
        live = next(v for p in first["projects"] for v in p["versions"] if v["status"] == "Live")
        trail = session.scalars(
            select(models.AuditLog.new_status)
            .where(models.AuditLog.entity_id == live["id"])
            .order_by(models.AuditLog.id)
        ).all()
        assert trail == ["Build in Progress", "QA & Testing", "Ready to Launch", "Live"]


def test_seed_demo_is_idempotent(engine):
    with transaction(engine) as session:
        first = seed_demo(session)
    with transaction(engine) as session:
        before = _counts(session)
    with transaction(engine) as session:
        assert seed_demo(session) == first
    with transaction(engine) as session:
        assert _counts(session) == before


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "ENVIRONMENT": "development"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True, check=True
    )


def test_cli_migrate_and_seed_demo_print_json(databases):
    url = databases.url(databases.empty())
    assert json.loads(_cli("migrate", database_url=url).stdout)["revision"]
    out = json.loads(_cli("seed-demo", database_url=url).stdout)
    assert len(out["tenants"]) == 2
    assert json.loads(_cli("seed-demo", "--if-empty", database_url=url).stdout) == out


def test_cli_token_is_a_jwt_signed_with_the_dev_secret(tmp_path):
    out = _cli(
        "token",
        "--tenant",
        "t1",
        "--roles",
        "ops_admin,ops_build",
        "--sub",
        "u1",
        "--ttl",
        "60",
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    settings = Settings(environment="development")
    claims = jwt.decode(
        out.stdout.strip(),
        settings.jwt_secret.get_secret_value(),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert claims["sub"] == "u1" and claims["tenants"] == ["t1"]
    assert claims["roles"] == ["ops_admin", "ops_build"]
    assert claims["exp"] - claims["iat"] == 60
