"""The running stack the end-to-end tests drive: the sandbox, a Dagster webserver and a daemon, each a
real process, on PostgreSQL (the production store; SQLite is covered in process)."""

import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.servers import (
    Processes,
    Sandbox,
    dagster_home,
    free_port,
    sandbox_env,
    wait_for,
    wait_for_code_location,
)

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
    dagster_home(home)
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
            sandbox_url = stack.uvicorn("resources.sandbox.app:create_app")
            stack.env |= sandbox_env(sandbox_url)  # the WRK Platform and the workflow steps' six services
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
