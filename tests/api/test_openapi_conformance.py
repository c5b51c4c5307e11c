"""The API against its own description: Schemathesis (`st run --checks all`) over every operation of
/openapi.json, on a real uvicorn on loopback on each backend, with a token of each role (minted as
`wrk-orch token` mints them) in a seed-demo tenant. Every check must pass: no 5xx, every status, media
type, header and body as documented, schema-valid requests accepted and invalid ones refused, a 405 that
names the allowed methods. Warnings that only say a role may not call an operation (401/403 only) or
that random ids find nothing (404) are not failures.

The token holding every role runs every phase (coverage, fuzzing, stateful); each single role runs the
fuzzing phase, where its refusals are checked. Examples are bounded and the seed fixed, so a run is the
same every time. The SSE stream (`GET /v1/users/{user_id}/events`) is left out: it never ends, so each
case would last the whole request timeout; tests/api/test_live.py covers it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from cli.demo import seed_demo
from domain.core.settings import Settings
from domain.core.store import transaction
from domain.core.tokens import mint_dev_token
from tests.servers import BIN, ServerThread

CONFIG = Path(__file__).with_name("schemathesis.toml")
ROLES = ["admin", "ops_admin", "ops_build", "ops_release", "service", "approver", "workflow_operator"]
EVERY_ROLE = "every role"
SEED = "20261207"
STREAM = "/v1/users/{user_id}/events"


@pytest.fixture(scope="module")
def api(shared_engine, sandbox_server, tmp_path_factory) -> Iterator[dict[str, Any]]:
    settings = Settings(
        environment="test",
        wrk_api_url=sandbox_server.url,
        github_api_url=sandbox_server.github_url,
        deploy_deadline_s=60,
    )
    with transaction(shared_engine) as session:
        demo = seed_demo(session)
    server = ServerThread(create_app(settings, shared_engine)).start()
    workdir = tmp_path_factory.mktemp("schemathesis")
    yield {"url": server.url, "settings": settings, "tenant": demo["tenants"][0]["id"], "workdir": workdir}
    server.stop()


def schemathesis(api: dict[str, Any], roles: list[str], *options: str) -> subprocess.CompletedProcess[str]:
    """`st run` with a token holding `roles`, from a folder of its own (it keeps a cache where it runs)."""
    token = mint_dev_token(api["settings"], tenants=[api["tenant"]], roles=roles, sub="schemathesis")
    return subprocess.run(
        [
            str(BIN / "st"),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{api['url']}/openapi.json",
            "--checks",
            "all",
            "--seed",
            SEED,
            "--workers",
            "1",
            "--request-timeout",
            "120",
            "--header",
            f"Authorization: Bearer {token}",
            "--header",
            f"X-Tenant-ID: {api['tenant']}",
            "--exclude-path",
            STREAM,
            *options,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=api["workdir"],
    )


@pytest.mark.parametrize("role", [EVERY_ROLE, *ROLES])
def test_every_operation_keeps_its_description(api: dict[str, Any], role: str) -> None:
    if role == EVERY_ROLE:
        run = schemathesis(api, ROLES, "--max-examples", "5")
    else:
        run = schemathesis(api, [role], "--phases", "fuzzing", "--max-examples", "1")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "Tested: " in run.stdout, run.stdout[-5000:]
