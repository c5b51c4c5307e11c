"""The GitHub REST client (the subset release builds use) and GitHub App authentication.

Authentication is a plain token (`GITHUB_TOKEN`) or, when `GITHUB_APP_ID` is set, a GitHub App: an
RS256 app JWT is exchanged for an installation token (`POST /app/installations/{id}/access_tokens`),
which is cached until shortly before it expires and fetched again when GitHub answers 401.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from domain.settings import Settings, get_settings
from domain.urls import path_segment
from resources.errors import RateLimited, RetryableError
from resources.http import HttpClient, parse_retry_after
from resources.retry import RetryPolicy

API_VERSION = "2022-11-28"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}


class AppInstallationAuth(httpx.Auth):
    """httpx authentication as a GitHub App installation, shared by every client of one process."""

    JWT_TTL_S = 540  # GitHub accepts at most 10 minutes; stay under it despite clock drift
    REFRESH_MARGIN_S = 300.0  # an installation token is replaced this long before it expires

    def __init__(
        self,
        api_url: str,
        app_id: str,
        private_key: str,
        installation_id: str,
        *,
        clock: Callable[[], float] = time.time,
        **client_kwargs: Any,
    ) -> None:
        self.app_id, self.installation_id, self.clock = str(app_id), str(installation_id), clock
        self._key = private_key
        # The exchange goes through the same error mapping and retry policy as every call.
        self._exchange = HttpClient(api_url, headers=HEADERS, **client_kwargs)
        self._exchange.service = "github"
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.exchanges = 0  # tokens fetched (for metrics and tests)

    def app_jwt(self) -> str:
        # GitHub checks these against its own clock: the real time, whatever `clock` the cache uses.
        import jwt  # only GitHub App authentication signs JWTs: not on every step's import path

        now = int(time.time())
        claims = {"iat": now - 60, "exp": now + self.JWT_TTL_S, "iss": self.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at - self.REFRESH_MARGIN_S:
                answer = self._exchange.request(
                    "POST",
                    f"/app/installations/{path_segment(self.installation_id)}/access_tokens",
                    headers={"Authorization": f"Bearer {self.app_jwt()}"},
                ).json()
                self._token = str(answer["token"])
                self._expires_at = datetime.fromisoformat(str(answer["expires_at"]).replace("Z", "+00:00")).timestamp()
                self.exchanges += 1
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early: drop the token; send once more with a new one when the body can
            # be sent twice. A streamed upload's 401 goes back to the client, which retries it (the
            # retry opens the file again and gets the new token).
            self.invalidate(token)
            if replayable(request):
                request.headers["Authorization"] = f"Bearer {self.token()}"
                yield request

    def close(self) -> None:
        self._exchange.close()


def replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


_app_auths: dict[tuple[str, ...], AppInstallationAuth] = {}
_app_auths_lock = threading.Lock()


def app_auth(settings: Settings) -> AppInstallationAuth:
    """The process's one AppInstallationAuth for these settings (so its token cache is shared)."""
    if not (settings.github_app_id and settings.github_app_private_key and settings.github_app_installation_id):
        raise ValueError("GITHUB_APP_ID needs GITHUB_APP_PRIVATE_KEY and GITHUB_APP_INSTALLATION_ID")
    key = settings.github_app_private_key.get_secret_value()
    if not key.lstrip().startswith("-----BEGIN"):
        key = Path(key).read_text()  # a path to the PEM file
    cache_key = (settings.github_api_url, settings.github_app_id, settings.github_app_installation_id, key)
    with _app_auths_lock:
        auth = _app_auths.get(cache_key)
        if auth is None:
            auth = _app_auths[cache_key] = AppInstallationAuth(
                settings.github_api_url,
                settings.github_app_id,
                key,
                settings.github_app_installation_id,
                connect_timeout_s=settings.http_connect_timeout_s,
                read_timeout_s=settings.http_read_timeout_s,
                retry=RetryPolicy.from_settings(settings),
            )
        return auth


class GitHubClient(HttpClient):
    service = "github"

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        auth: httpx.Auth | None = None,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        if (token is None) == (auth is None):
            raise ValueError("GitHubClient needs a token or an auth, not both")
        headers = dict(HEADERS) | ({"Authorization": f"Bearer {token}"} if token is not None else {})
        super().__init__(base_url, headers=headers, auth=auth, **kwargs)
        # The artifact storage URL is pre-signed: it gets its own client, which never sends our token.
        self.storage = HttpClient("", retry=self.retry, connect_timeout_s=5.0, read_timeout_s=300.0)
        self.storage.service = "github-storage"
        self.clock = clock

    def close(self) -> None:
        self.storage.close()
        super().close()

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
        if (
            response.status_code == 401
            and isinstance(self.http.auth, AppInstallationAuth)
            and not replayable(response.request)
        ):
            # A streamed upload refused with a token the auth has just dropped: the next attempt has a new one.
            message = f"{response.request.method} {response.request.url.path} answered 401"
            return RetryableError(self.service, message, status=401)
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
        """The zip endpoint answers with a redirect to short-lived storage; follow it, stream to a file.
        Storage errors go through the same error mapping and retry policy as every call."""
        path = f"/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/zip"
        response = self.request("GET", path, follow_redirects=False)
        if response.is_redirect:
            return self.storage.download(response.headers["location"], destination)
        return self.download(path, destination)

    # -- Releases ----------------------------------------------------------------------------------

    def get_release_by_tag(self, owner: str, repo: str, tag: str) -> dict[str, Any]:
        release: dict[str, Any] = self.request("GET", f"/repos/{owner}/{repo}/releases/tags/{path_segment(tag)}").json()
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
            upload=path,  # streamed from the file
            headers={"Content-Type": content_type},
        ).json()
        return asset

    def delete_release_asset(self, owner: str, repo: str, asset_id: int | str) -> None:
        self.request("DELETE", f"/repos/{owner}/{repo}/releases/assets/{asset_id}")


def github_client(settings: Settings | None = None, retry: RetryPolicy | None = None) -> GitHubClient:
    settings = settings or get_settings()
    if settings.github_app_id:
        credentials: dict[str, Any] = {"auth": app_auth(settings)}
    else:
        credentials = {"token": settings.github_token.get_secret_value()}
    return GitHubClient(
        settings.github_api_url,
        **credentials,
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
        retry=retry or RetryPolicy.from_settings(settings),
    )
