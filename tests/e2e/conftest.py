"""The running stack the end-to-end tests drive: the sandbox, a Dagster webserver and a daemon, each a
real process, on PostgreSQL (the production store; SQLite is covered in process)."""

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster_graphql import DagsterGraphQLClient

from domain.workflows.workflow_definitions import SERVICES
from tests.servers import Processes, Sandbox, free_port, wait_for, wait_for_code_location

ROOT = Path(__file__).resolve().parents[2]
# Re-execution from failure, as the UI's button launches it (tests that re-execute a failed run).
REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


@pytest.fixture
def stack(backend, database_url, tmp_path):
    if backend != "postgresql":
        pytest.skip("the end-to-end stack runs on PostgreSQL; SQLite is covered in process")
    home = tmp_path / "dagster_home"
    home.mkdir()
    instance_config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # Run monitoring fails a run whose worker has not started within start_timeout_seconds. On a busy CI
    # machine (load 28 on 2 cores was seen) a start took longer than make run's bound and the run was
    # failed for it; the tests here are not about monitoring, so they give a start all the time it needs.
    instance_config["run_monitoring"]["start_timeout_seconds"] = 600
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    # Create the instance's storage once, before the webserver and the daemon open it: started
    # together on an empty DAGSTER_HOME they race to create the SQLite schedule storage, and the loser
    # finds two Alembic heads (a CI run failed so). `make run` does the same (scripts/supervise.py).
    with DagsterInstance.from_config(str(home)):
        pass
    smtp_port = free_port()
    env = {
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": database_url,
        "SMTP_PORT": str(smtp_port),
        "SENSOR_INTERVAL_SECONDS": "1",
        "RETRY_BASE_DELAY_S": "0.05",
        "RETRY_MAX_DELAY_S": "0.2",
    }
    log_path = tmp_path / "stack.log"
    with log_path.open("w") as log:
        stack = Processes(env, log)
        try:
            sandbox_url = stack.env["WRK_API_URL"] = stack.uvicorn("resources.sandbox.app:create_app")
            for service in SERVICES:  # the workflow steps' six services, on this sandbox
                stack.env[f"SERVICE_{service.upper()}_URL"] = f"{sandbox_url}/services/{service}"
            # The seven-phase pipeline: its backends are the sandbox's; the API the sandbox calls back is
            # started by the test that needs it, on this port (tests/e2e/test_phases_e2e.py).
            api_port = free_port()
            stack.env |= {
                "INTEGRATIONS_API_URL": sandbox_url + "/integrations",
                "PAYMENTS_API_URL": sandbox_url + "/payments",
                "PHASE_CALLBACK_URL": f"http://127.0.0.1:{api_port}",
                "PROOF_PACKET_DIR": str(home / "proof-packets"),
            }
            web_port = free_port()
            # One code server shared by the webserver and the daemon, the shape `make run` has.
            workspace = stack.dagster_code_server(home)
            stack.dagster_webserver(web_port, workspace)
            stack.dagster_daemon(workspace)
            wait_for(f"http://127.0.0.1:{web_port}/server_info", why=lambda: log_path.read_text()[-3000:])
            wait_for_code_location(f"http://127.0.0.1:{web_port}", why=lambda: log_path.read_text()[-3000:])
            yield {
                "graphql": DagsterGraphQLClient("127.0.0.1", port_number=web_port),
                "sandbox": Sandbox(sandbox_url, smtp_port),
                "sandbox_url": sandbox_url,
                "api_port": api_port,
                "proof_packet_dir": home / "proof-packets",
                "log": log_path,
                "processes": stack,  # the kill tests stop and start the daemon
                "workspace": workspace,
            }
        finally:
            stack.stop()
