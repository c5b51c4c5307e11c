"""`wrk-orch release run TAG --watch` follows a release from its queued trigger to its end, each
repository's progress on the way: exit 0 when it is published, 1 when it fails. The release job runs in
process over the sandbox's GitHub (as tests/orchestration_defs/test_release.py drives it), started once
the watch is polling."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from cli.main import app
from domain.core.settings import Settings
from orchestration_defs.release import release_build
from resources.dagster_resources import DatabaseResource, GitHubResource
from tests.api.conftest import make_token
from tests.servers import ServerThread, until

runner = CliRunner()


def _run_release(database_url: str, instance: Any, tag: str) -> Any:
    config = {"tag": tag, "repositories": ["bllvm-node"], "poll_initial_s": 0.05, "poll_max_s": 0.2}
    return release_build.execute_in_process(
        run_config={"ops": {"start_release": {"config": config}}},
        instance=instance,
        raise_on_error=False,
        resources={"database": DatabaseResource(url=database_url), "github": GitHubResource()},
    )


@pytest.mark.parametrize(
    ("conclusions", "exit_code", "status"),
    [(["success"], 0, "succeeded"), (["failure", "failure"], 1, "failed")],
)
def test_release_run_watch_follows_the_release_to_its_end(
    engine, database_url, sandbox, flow_env, instance, monkeypatch, conclusions, exit_code, status
):
    sandbox.configure_github(default_duration_s=0.2, repos={"bllvm-node": {"conclusions": conclusions}})
    settings = Settings(environment="test")
    server = ServerThread(create_app(settings, engine)).start()
    tag = f"v3.0.{exit_code}"
    polls: list[str] = []
    original = httpx.request

    def counting(method: str, url: str, **kwargs: Any) -> Any:
        if method == "GET" and "/v1/queue/" in url:
            polls.append(url)  # the watch following the queued trigger: no release row yet
        return original(method, url, **kwargs)

    monkeypatch.setattr(httpx, "request", counting)
    outcome: list[Any] = []

    def release_once_watched() -> None:
        until(lambda: polls, "the watch following the queued trigger")
        outcome.append(_run_release(database_url, instance, tag))

    job = threading.Thread(target=release_once_watched)
    job.start()
    try:
        token = make_token(settings, tenants=[], roles=["ops_release"], sub="rita")
        env = {"WRK_ORCH_API_URL": server.url, "WRK_ORCH_TOKEN": token}
        result = runner.invoke(app, ["release", "run", tag, "--watch", "--interval", "0.2", "--json"], env=env)
    finally:
        job.join()
        server.stop()
    assert outcome and outcome[0].success is (exit_code == 0)
    assert result.exit_code == exit_code, result.output
    # Under --json the progress lines go to stderr (one at each change) and stdout is the release's JSON.
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{tag}: ")]
    assert lines[0].startswith(f"{tag}: queued")  # followed from before its run created it
    assert lines[-1].startswith(f"{tag}: {status}") and f"bllvm-node={status}" in lines[-1]
    final = json.loads(result.stdout)
    assert final["tag"] == tag and final["status"] == status
    builds = {b["repository"]: b["status"] for b in final["builds"]}
    assert builds.pop("bllvm-node") == status and set(builds.values()) == {"succeeded"}  # its dependencies
