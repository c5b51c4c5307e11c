"""The GitHub REST client (the subset release builds use) and its Dagster resource."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from domain.settings import Settings, get_settings
from resources.errors import RateLimited
from resources.http import HttpClient, parse_retry_after
from resources.retry import RetryPolicy

API_VERSION = "2022-11-28"


class GitHubClient(HttpClient):
    service = "github"

    def __init__(self, base_url: str, token: str, *, clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(
            base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
            },
            **kwargs,
        )
        self.clock = clock

    def classify(self, response: httpx.Response) -> Exception | None:
        # GitHub signals rate limits with 403 as well as 429: wait for retry-after when given, else until
        # x-ratelimit-reset when the remaining quota is 0, else back off (secondary limits).
        if response.status_code in (403, 429):
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            remaining = response.headers.get("x-ratelimit-remaining")
            reset = response.headers.get("x-ratelimit-reset")
            if retry_after is None and remaining == "0" and reset:
                retry_after = max(float(reset) - self.clock(), 0.0) + 1.0
            limited = (
                response.status_code == 429
                or retry_after is not None
                or remaining == "0"
                or "rate limit" in response.text.lower()
            )
            if limited:
                return RateLimited(
                    self.service,
                    f"{response.request.method} {response.request.url.path} rate limited ({response.status_code})",
                    status=response.status_code,
                    retry_after=retry_after,
                )
        return super().classify(response)

    # -- Actions -----------------------------------------------------------------------------------

    def dispatch_workflow(
        self,
        owner: str,
        repo: str,
        workflow: str,
        ref: str,
        inputs: dict[str, str],
        *,
        return_run_details: bool = True,
    ) -> dict[str, Any] | None:
        """`workflow_dispatch`. With `return_run_details` the answer names the run (newer API); a
        server that refuses the field raises ValidationRejected, and the caller falls back to finding
        the run by its correlation id. Returns the run details, or None when the server gave none."""
        body: dict[str, Any] = {"ref": ref, "inputs": inputs}
        if return_run_details:
            body["return_run_details"] = True
        response = self.request("POST", f"/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches", json=body)
        if response.status_code == 200 and response.content:
            details: dict[str, Any] = response.json()
            return details
        return None

    def repository_dispatch(self, owner: str, repo: str, event_type: str, payload: dict[str, Any]) -> None:
        self.request(
            "POST",
            f"/repos/{owner}/{repo}/dispatches",
            json={"event_type": event_type, "client_payload": payload},
        )

    def list_workflow_runs(
        self,
        owner: str,
        repo: str,
        *,
        workflow: str | None = None,
        event: str | None = None,
        created: str | None = None,
        per_page: int = 50,
    ) -> list[dict[str, Any]]:
        path = (
            f"/repos/{owner}/{repo}/actions/workflows/{workflow}/runs"
            if workflow
            else f"/repos/{owner}/{repo}/actions/runs"
        )
        params: dict[str, Any] = {"per_page": per_page}
        if event:
            params["event"] = event
        if created:
            params["created"] = created
        runs: list[dict[str, Any]] = self.request("GET", path, params=params).json()["workflow_runs"]
        return runs

    def get_workflow_run(self, owner: str, repo: str, run_id: int | str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("GET", f"/repos/{owner}/{repo}/actions/runs/{run_id}").json()
        return run

    def list_run_artifacts(self, owner: str, repo: str, run_id: int | str) -> list[dict[str, Any]]:
        body = self.request("GET", f"/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts").json()
        artifacts: list[dict[str, Any]] = body["artifacts"]
        return artifacts

    def download_artifact(self, owner: str, repo: str, artifact_id: int | str, destination: Path) -> Path:
        """The zip endpoint answers with a redirect to short-lived storage; follow it, stream to a file."""
        response = self.request(
            "GET", f"/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/zip", follow_redirects=False
        )
        if response.is_redirect:
            location = response.headers["location"]
            # The storage URL is pre-signed: it must not receive our token.
            with httpx.Client(timeout=self.http.timeout) as storage:
                download = self.retry.call(lambda: storage.get(location).raise_for_status())
            content = download.content
        else:
            content = response.content
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content)
        return destination

    # -- Releases ----------------------------------------------------------------------------------

    def get_release_by_tag(self, owner: str, repo: str, tag: str) -> dict[str, Any]:
        release: dict[str, Any] = self.request("GET", f"/repos/{owner}/{repo}/releases/tags/{tag}").json()
        return release

    def create_release(
        self,
        owner: str,
        repo: str,
        *,
        tag: str,
        name: str,
        body: str,
        prerelease: bool,
        target_commitish: str | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"tag_name": tag, "name": name, "body": body, "prerelease": prerelease}
        if target_commitish:
            payload["target_commitish"] = target_commitish
        release: dict[str, Any] = self.request("POST", f"/repos/{owner}/{repo}/releases", json=payload).json()
        return release

    def list_release_assets(self, owner: str, repo: str, release_id: int | str) -> list[dict[str, Any]]:
        assets: list[dict[str, Any]] = self.request(
            "GET", f"/repos/{owner}/{repo}/releases/{release_id}/assets", params={"per_page": 100}
        ).json()
        return assets

    def upload_release_asset(
        self,
        upload_url: str,
        path: Path,
        *,
        name: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """`upload_url` is the release's (an RFC 6570 template on github.com: `{?name,label}`)."""
        url = upload_url.split("{", 1)[0]
        asset: dict[str, Any] = self.request(
            "POST",
            url,
            params={"name": name or path.name},
            content=path.read_bytes(),
            headers={"Content-Type": content_type},
        ).json()
        return asset

    def delete_release_asset(self, owner: str, repo: str, asset_id: int | str) -> None:
        self.request("DELETE", f"/repos/{owner}/{repo}/releases/assets/{asset_id}")


def github_client(settings: Settings | None = None, retry: RetryPolicy | None = None) -> GitHubClient:
    settings = settings or get_settings()
    return GitHubClient(
        settings.github_api_url,
        settings.github_token.get_secret_value(),
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
        retry=retry or RetryPolicy.from_settings(settings),
    )


class GitHubResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Empty fields fall back to the settings (GITHUB_API_URL, GITHUB_TOKEN)."""

    base_url: str = ""
    token: str = ""

    def client(self) -> GitHubClient:
        return github_client(get_settings().with_overrides(github_api_url=self.base_url, github_token=self.token))
