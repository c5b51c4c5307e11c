"""`make run`'s logs: every line of every service's file under LOG_DIR is a JSON object with the one field
set (time, level, service, message; request_id or run_id where there is one), no file under var/ holds a
terminal colour code or the JWT secret, and the daemon's per-tick sensor lines are at DEBUG."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient

from domain.core.settings import Settings
from domain.core.tokens import mint_dev_token
from tests.servers import free_port, until

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "jwt-secret-of-this-test-0123456789abcdef-0123"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")
FIELDS = ("time", "level", "service", "message")
SERVICES = {"supervisor", "sandbox", "api", "dagster-code-server", "dagster-webserver", "dagster-daemon"}


def _lines(log_dir: Path) -> dict[str, list[dict]]:
    return {path.name: [json.loads(line) for line in path.read_text().splitlines()] for path in log_dir.glob("*.log")}


@pytest.fixture
def make_run(database_url, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "JWT_"))},
        "DATABASE_URL": database_url,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "LOG_DIR": str(tmp_path / "logs"),
        "LOG_LEVEL": "DEBUG",  # the sensor ticks' lines are written, at DEBUG
        "JWT_SECRET": JWT_SECRET,
        "API_WORKERS": "1",
        "DAGSTER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "SANDBOX_PORT": str(free_port()),
        "DAGSTER_GRPC_PORT": str(free_port()),
        "SMTP_PORT": str(free_port()),
    }
    out = tmp_path / "make-run.out"
    with out.open("w") as output:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        until(lambda: "run: ready" in out.read_text() or process.poll() is not None, why=out.read_text)
        assert process.poll() is None, out.read_text()
        yield env, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # make forwards it to the supervisor, which stops everything
            process.wait(timeout=600)


@pytest.mark.slow
@pytest.mark.xdist_group("make_run")
def test_every_service_logs_json_lines_with_one_field_set_no_colour_and_no_secret(make_run, tmp_path):
    env, process = make_run
    log_dir, home = Path(env["LOG_DIR"]), Path(env["DAGSTER_HOME"])
    token = mint_dev_token(Settings(environment="test", jwt_secret=JWT_SECRET), tenants=["t1"], roles=["ops_admin"])
    answer = httpx.get(
        f"http://127.0.0.1:{env['API_PORT']}/v1/queue/stats",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "logs-test-1"},
        timeout=60,
    )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "logs-test-1"
    run_id = DagsterGraphQLClient("127.0.0.1", port_number=int(env["DAGSTER_PORT"])).submit_job_execution(
        "queue_sweeper"
    )

    def seen() -> bool:
        lines = _lines(log_dir)
        daemon = lines.get("dagster-daemon.log", [])
        return any(line.get("run_id") == run_id and "RUN_SUCCESS" in line["message"] for line in daemon) and any(
            line["message"].startswith("Checking for new runs for sensor") for line in daemon
        )

    until(seen, why=lambda: (log_dir / "dagster-daemon.log").read_text()[-3000:])
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=600)
    until(lambda: '"message": "stopped"' in (log_dir / "supervisor.log").read_text(), why="the supervisor did not stop")

    lines = _lines(log_dir)  # every line parses as JSON
    assert {name.removesuffix(".log") for name in lines} == SERVICES
    for name, records in lines.items():
        assert records, name
        for record in records:
            assert list(record)[:4] == list(FIELDS), (name, record)
            assert record["service"] in SERVICES, (name, record)
            assert record["level"] in ("debug", "info", "warning", "error", "critical"), (name, record)
    [access] = [r for r in lines["api.log"] if r.get("request_id") == "logs-test-1"]
    assert access["message"] == "GET /v1/queue/stats 200" and access["tenant_id"] == "t1"
    ticks = [r for r in lines["dagster-daemon.log"] if r["message"].startswith("Checking for new runs for sensor")]
    assert ticks and {r["level"] for r in ticks} == {"debug"}
    assert any(r.get("run_id") == run_id for r in lines["dagster-daemon.log"])  # the run worker's lines

    for path in [*log_dir.rglob("*"), *home.rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            assert JWT_SECRET.encode() not in content, path
            if not path.name.endswith((".db", ".db-wal", ".db-shm")):
                assert not ANSI.search(content), path
