from __future__ import annotations

import time
import zipfile

import pytest

from resources.errors import RateLimited, ValidationRejected
from resources.github import GitHubClient
from resources.retry import RetryPolicy


@pytest.fixture
def gh(sandbox, sleeps):
    sandbox.configure_github(default_duration_s=0.3)
    with GitHubClient(sandbox.github_url, "ghp_x", retry=RetryPolicy(max_attempts=4, sleep=sleeps)) as client:
        yield client


def _wait_completed(gh, run_id) -> dict:
    # The sandbox completes the run 0.3 s after dispatch, however busy the machine: no deadline here.
    while True:
        run = gh.get_workflow_run("acme", "node", run_id)
        if run["status"] == "completed":
            return run
        time.sleep(0.05)


def test_dispatch_with_run_details_then_poll_and_download_artifact(gh, sandbox, tmp_path):
    details = gh.dispatch_workflow("acme", "node", "build.yml", "main", {"correlation_id": "c-1"})
    run = _wait_completed(gh, details["workflow_run_id"])
    assert run["conclusion"] == "success" and "c-1" in run["display_title"]
    [artifact] = gh.list_run_artifacts("acme", "node", run["id"])
    path = gh.download_artifact("acme", "node", artifact["id"], tmp_path / "node.zip")
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["node.txt"]
    [call] = sandbox.calls("POST")
    assert call["path"].endswith("/actions/workflows/build.yml/dispatches")


def test_server_refusing_return_run_details_is_a_validation_rejection(gh, sandbox):
    sandbox.configure_github(supports_return_run_details=False)
    with pytest.raises(ValidationRejected):
        gh.dispatch_workflow("acme", "node", "build.yml", "main", {"correlation_id": "c-2"})
    assert (
        gh.dispatch_workflow("acme", "node", "build.yml", "main", {"correlation_id": "c-2"}, return_run_details=False)
        is None
    )
    [run] = gh.list_workflow_runs("acme", "node", workflow="build.yml", event="workflow_dispatch")
    assert "[c-2]" in run["display_title"]


def test_primary_rate_limit_waits_until_reset(sandbox, sleeps):
    now = 1_000_000.0
    sandbox.fault(
        "GET",
        "/github/repos/acme/node/actions/runs",
        count=1,
        status=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now + 42))},
        body={"message": "API rate limit exceeded"},
    )
    with GitHubClient(
        sandbox.github_url, "t", clock=lambda: now, retry=RetryPolicy(max_attempts=3, sleep=sleeps)
    ) as gh:
        assert gh.list_workflow_runs("acme", "node") == []
    assert sleeps == [43.0]


def test_secondary_rate_limit_honours_retry_after(gh, sandbox, sleeps):
    sandbox.fault("GET", "/github/repos/acme/node/actions/runs", count=2, status=429, headers={"retry-after": "3"})
    assert gh.list_workflow_runs("acme", "node") == []
    assert sleeps == [3.0, 3.0]


def test_403_rate_limit_without_headers_backs_off(gh, sandbox, sleeps):
    sandbox.fault(
        "GET",
        "/github/repos/acme/node/actions/runs",
        count=1,
        status=403,
        body={"message": "You have exceeded a secondary rate limit"},
    )
    gh.list_workflow_runs("acme", "node")
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_rate_limit_until_attempts_run_out(gh, sandbox):
    sandbox.fault("GET", "/github/repos/acme/node/actions/runs", count=9, status=429, headers={"retry-after": "1"})
    with pytest.raises(RateLimited):
        gh.list_workflow_runs("acme", "node")
    assert len(sandbox.calls("GET")) == 4


def test_release_create_get_upload_list_delete(gh, tmp_path):
    release = gh.create_release("acme", "bllvm", tag="v1.0.0", name="v1.0.0", body="notes", prerelease=True)
    assert gh.get_release_by_tag("acme", "bllvm", "v1.0.0")["id"] == release["id"]
    with pytest.raises(ValidationRejected):
        gh.create_release("acme", "bllvm", tag="v1.0.0", name="again", body="", prerelease=False)
    payload = tmp_path / "SHA256SUMS"
    payload.write_text("abc  file\n")
    asset = gh.upload_release_asset(release["upload_url"], payload)
    assert asset["name"] == "SHA256SUMS" and asset["digest"].startswith("sha256:")
    assert [a["id"] for a in gh.list_release_assets("acme", "bllvm", release["id"])] == [asset["id"]]
    gh.delete_release_asset("acme", "bllvm", asset["id"])
    assert gh.list_release_assets("acme", "bllvm", release["id"]) == []


def test_repository_dispatch_creates_a_run(gh):
    gh.repository_dispatch("acme", "node", "build", {"correlation_id": "c-9"})
    [run] = gh.list_workflow_runs("acme", "node", event="repository_dispatch")
    assert "c-9" in run["display_title"]
