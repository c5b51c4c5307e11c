from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
import zipfile

import httpx
import pytest

from domain.core.errors import RateLimited, RetryableError, ValidationRejected
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


def _completed_artifact(gh, sandbox, repo="node", **repo_config) -> dict:
    sandbox.configure_github(default_duration_s=0.05, repos={repo: repo_config} if repo_config else {})
    details = gh.dispatch_workflow("acme", repo, "build.yml", "main", {"correlation_id": "c-s"})
    run = _wait_completed_in(gh, repo, details["workflow_run_id"])
    [artifact] = gh.list_run_artifacts("acme", repo, run["id"])
    return artifact


def _wait_completed_in(gh, repo, run_id) -> dict:
    while (run := gh.get_workflow_run("acme", repo, run_id))["status"] != "completed":
        time.sleep(0.05)
    return run


def test_a_storage_error_is_mapped_and_retried_by_the_one_policy(gh, sandbox, sleeps, tmp_path):
    artifact = _completed_artifact(gh, sandbox)
    sandbox.configure_github(storage_failures=2)
    path = gh.download_artifact("acme", "node", artifact["id"], tmp_path / "node.zip")
    assert zipfile.ZipFile(path).namelist() == ["node.txt"]
    assert gh.storage.attempts == 3 and len(sleeps) == 2
    assert not (tmp_path / "node.zip.part").exists()


def test_storage_that_keeps_failing_raises_the_mapped_error(gh, sandbox, tmp_path):
    artifact = _completed_artifact(gh, sandbox)
    sandbox.configure_github(storage_failures=9)
    with pytest.raises(RetryableError) as failure:
        gh.download_artifact("acme", "node", artifact["id"], tmp_path / "node.zip")
    assert failure.value.status == 503 and gh.storage.attempts == 4
    assert not (tmp_path / "node.zip").exists()


def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_artifacts_are_streamed_to_disk(gh, sandbox, tmp_path):
    size = 24 * 1024 * 1024
    artifact = _completed_artifact(gh, sandbox, artifact_bytes=size)
    destination = tmp_path / "big.zip"
    peak = _peak_traced(lambda: gh.download_artifact("acme", "node", artifact["id"], destination))
    assert destination.stat().st_size > size
    assert peak < size / 4, f"peak {peak} bytes: the artifact was held in memory"


def test_uploads_are_streamed_from_disk(gh, sandbox, tmp_path):
    release = gh.create_release("acme", "bllvm", tag="v-big", name="big", body="", prerelease=False)
    payload = tmp_path / "big.bin"
    with payload.open("wb") as out:
        for _ in range(24):
            out.write(os.urandom(1024 * 1024))
    peak = _peak_traced(lambda: gh.upload_release_asset(release["upload_url"], payload))
    [asset] = gh.list_release_assets("acme", "bllvm", release["id"])
    assert asset["size"] == payload.stat().st_size
    assert asset["digest"] == "sha256:" + hashlib.sha256(payload.read_bytes()).hexdigest()
    assert peak < payload.stat().st_size / 4, f"peak {peak} bytes: the upload was read into memory"


def test_the_tag_is_percent_encoded_in_github_urls(tmp_path):
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path)
        return httpx.Response(200, json={"id": 1, "tag_name": "app/v2.0.0"})

    with GitHubClient("http://github.test", "t", transport=httpx.MockTransport(handler)) as client:
        assert client.get_release_by_tag("acme", "bllvm", "app/v2.0.0")["id"] == 1
    assert seen == [b"/repos/acme/bllvm/releases/tags/app%2Fv2.0.0"]


def test_a_tag_with_a_slash_round_trips_through_the_sandbox(gh):
    release = gh.create_release("acme", "bllvm", tag="app/v2.0.0", name="app 2.0.0", body="", prerelease=False)
    assert gh.get_release_by_tag("acme", "bllvm", "app/v2.0.0")["id"] == release["id"]
