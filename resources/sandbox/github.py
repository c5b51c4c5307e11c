"""GitHub REST emulator: workflow dispatch and runs that progress in time, artifacts, releases, assets.

A dispatched run is `queued`, then `in_progress`, then `completed` after the repository's configured
duration, with the next configured conclusion (`POST /_sandbox/github/config`). A successful run has
one artifact, a zip with a file naming the repository and run (`artifact_bytes` adds that many bytes).
Artifact storage streams its answers and can fail (`storage_failures`: the next N downloads answer
503); uploads are streamed to files.

GitHub App authentication: once configured (`app`: `app_id`, `installation_id`, `public_key` PEM,
optional `token_ttl_s`), `POST /app/installations/{id}/access_tokens` checks the RS256 app JWT (issuer,
signature, at most 10 minutes of validity) and issues an installation token; every other GitHub call
then needs a live installation token (401 otherwise). `POST /_sandbox/github/revoke-tokens` revokes
them all, as an expiry or a key rotation would.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from resources.sandbox.state import SandboxState

PREFIX = "/github"
REPO = PREFIX + "/repos/{owner}/{repo}"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def _not_found() -> JSONResponse:
    return JSONResponse({"message": "Not Found", "status": "404"}, status_code=404)


def _run_view(state: SandboxState, request: Request, run: dict[str, Any]) -> dict[str, Any]:
    elapsed = time.monotonic() - run["_started"]
    duration = run["_duration_s"]
    if elapsed < min(0.2, duration / 4):
        status, conclusion = "queued", None
    elif elapsed < duration:
        status, conclusion = "in_progress", None
    else:
        status, conclusion = "completed", run["_conclusion"]
        if conclusion == "success" and not run["_artifacts"]:
            _make_artifact(state, request, run)
    public = {k: v for k, v in run.items() if not k.startswith("_")}
    return public | {"status": status, "conclusion": conclusion}


def _make_artifact(state: SandboxState, request: Request, run: dict[str, Any]) -> None:
    artifact_id = state.next_id()
    buffer = io.BytesIO()
    extra = int(state.github_config["repos"].get(run["_repo"], {}).get("artifact_bytes", 0))
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{run['_repo']}.txt", f"{run['_repo']} built by run {run['id']} ({run['head_sha']})\n")
        if extra:
            archive.writestr(f"{run['_repo']}.bin", os.urandom(extra), compress_type=zipfile.ZIP_STORED)
    state.blobs[artifact_id] = buffer.getvalue()
    state.artifacts[artifact_id] = {
        "id": artifact_id,
        "name": f"{run['_repo']}-build",
        "size_in_bytes": len(buffer.getvalue()),
        "archive_download_url": (
            f"{_base(request)}/repos/{run['_owner']}/{run['_repo']}/actions/artifacts/{artifact_id}/zip"
        ),
        "expired": False,
        "workflow_run": {"id": run["id"]},
    }
    run["_artifacts"].append(artifact_id)


def _chunks(blob: bytes | Path) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        if isinstance(blob, Path):
            with blob.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 16), b""):
                    yield chunk
            return
        view = memoryview(blob)
        for start in range(0, len(view), 1 << 16):
            yield bytes(view[start : start + (1 << 16)])

    return chunks()


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"},
        status_code=401,
    )


Handler = Callable[[Request], Awaitable[Response]]


def routes(state: SandboxState) -> list[Route]:
    upload_dir = Path(tempfile.mkdtemp(prefix="sandbox-github-uploads-"))

    def authenticated(handler: Handler) -> Handler:
        """With an app configured, a GitHub call needs a live installation token."""

        async def check(request: Request) -> Response:
            app = state.github_config.get("app")
            if app:
                token = request.headers.get("authorization", "").removeprefix("Bearer ").removeprefix("token ")
                with state.lock:
                    expires = state.github_config["_tokens"].get(token)
                if expires is None or expires <= time.time():
                    return _unauthorized()
            return await handler(request)

        return check

    async def access_token(request: Request) -> Response:
        app = state.github_config.get("app")
        if not app:
            return _not_found()
        if str(request.path_params["installation_id"]) != str(app["installation_id"]):
            return _not_found()
        app_jwt = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(
                app_jwt, app["public_key"], algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]}
            )
        except jwt.PyJWTError as exc:
            return JSONResponse({"message": f"A JSON web token could not be decoded ({exc})"}, status_code=401)
        if str(claims["iss"]) != str(app["app_id"]) or claims["exp"] - claims["iat"] > 660:
            return JSONResponse({"message": "'Issuer' or 'Expiration time' claim is invalid"}, status_code=401)
        token = "ghs_" + secrets.token_urlsafe(27)
        expires_at = datetime.now(UTC) + timedelta(seconds=float(app.get("token_ttl_s", 3600)))
        with state.lock:
            state.github_config["_tokens"][token] = expires_at.timestamp()
            state.github_config["_exchanges"] += 1
        return JSONResponse(
            {
                "token": token,
                "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": {"actions": "write", "contents": "write"},
                "repository_selection": "all",
            },
            status_code=201,
        )

    async def revoke_tokens(_request: Request) -> JSONResponse:
        with state.lock:
            tokens = state.github_config.setdefault("_tokens", {})
            revoked = len(tokens)
            tokens.clear()
        return JSONResponse({"revoked": revoked})

    def new_run(request: Request, owner: str, repo: str, workflow: str, event: str, title: str) -> dict[str, Any]:
        cfg = state.github_config
        repo_cfg = cfg["repos"].get(repo, {})
        conclusions = repo_cfg.get("conclusions") or ["success"]
        conclusion = conclusions.pop(0) if len(conclusions) > 1 else conclusions[0]
        run_id = state.next_id()
        run = {
            "id": run_id,
            "name": workflow,
            "display_title": title,
            "event": event,
            "head_branch": "main",
            "head_sha": hashlib.sha1(f"{repo}{run_id}".encode()).hexdigest(),
            "run_number": run_id,
            "run_attempt": 1,
            "workflow_id": workflow,
            "html_url": f"{str(request.base_url).rstrip('/')}/{owner}/{repo}/actions/runs/{run_id}",
            "url": f"{_base(request)}/repos/{owner}/{repo}/actions/runs/{run_id}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "_owner": owner,
            "_repo": repo,
            "_started": time.monotonic(),
            "_duration_s": float(repo_cfg.get("duration_s", cfg["default_duration_s"])),
            "_conclusion": conclusion,
            "_artifacts": [],
        }
        state.runs[run_id] = run
        return run

    async def dispatch(request: Request) -> Response:
        p = request.path_params
        body = await request.json()
        if "ref" not in body:
            return JSONResponse({"message": 'Invalid request.\n\n"ref" wasn\'t supplied.'}, status_code=422)
        wants_details = bool(body.get("return_run_details"))
        if wants_details and not state.github_config["supports_return_run_details"]:
            return JSONResponse(
                {"message": 'Invalid request.\n\n"return_run_details" is not a permitted key.'}, status_code=422
            )
        inputs = body.get("inputs") or {}
        # The workflow's `run-name` shows its correlation id, as the project's workflows declare it.
        title = f"{p['workflow']} [{inputs['correlation_id']}]" if "correlation_id" in inputs else p["workflow"]
        with state.lock:
            run = new_run(request, p["owner"], p["repo"], p["workflow"], "workflow_dispatch", title)
        if wants_details:
            return JSONResponse({"workflow_run_id": run["id"], "run_url": run["url"], "html_url": run["html_url"]})
        return Response(status_code=204)

    async def repository_dispatch(request: Request) -> Response:
        p = request.path_params
        body = await request.json()
        payload = body.get("client_payload") or {}
        title = f"{body.get('event_type')} [{payload['correlation_id']}]" if "correlation_id" in payload else ""
        with state.lock:
            new_run(request, p["owner"], p["repo"], str(body.get("event_type")), "repository_dispatch", title)
        return Response(status_code=204)

    async def list_runs(request: Request) -> JSONResponse:
        p = request.path_params
        event = request.query_params.get("event")
        with state.lock:
            runs = [
                _run_view(state, request, r)
                for r in sorted(state.runs.values(), key=lambda r: -r["id"])
                if r["_owner"] == p["owner"]
                and r["_repo"] == p["repo"]
                and (p.get("workflow") in (None, r["workflow_id"]))
                and (event is None or r["event"] == event)
            ]
        per_page = int(request.query_params.get("per_page", 30))
        return JSONResponse({"total_count": len(runs), "workflow_runs": runs[:per_page]})

    async def get_run(request: Request) -> JSONResponse:
        with state.lock:
            run = state.runs.get(int(request.path_params["run_id"]))
            if run is None or run["_repo"] != request.path_params["repo"]:
                return _not_found()
            return JSONResponse(_run_view(state, request, run))

    async def run_artifacts(request: Request) -> JSONResponse:
        with state.lock:
            run = state.runs.get(int(request.path_params["run_id"]))
            if run is None:
                return _not_found()
            _run_view(state, request, run)
            artifacts = [state.artifacts[a] for a in run["_artifacts"]]
        return JSONResponse({"total_count": len(artifacts), "artifacts": artifacts})

    async def artifact_zip(request: Request) -> Response:
        artifact_id = int(request.path_params["artifact_id"])
        if artifact_id not in state.blobs:
            return _not_found()
        # Like GitHub: a redirect to short-lived storage that needs no token.
        return RedirectResponse(f"{_base(request)}/_storage/{artifact_id}", status_code=302)

    async def storage(request: Request) -> Response:
        with state.lock:
            blob: bytes | Path | None = state.blobs.get(int(request.path_params["blob_id"]))
            failures = int(state.github_config.get("storage_failures", 0))
            if failures and blob is not None:
                state.github_config["storage_failures"] = failures - 1
        if blob is None:
            return _not_found()
        if failures:
            return Response("<Error><Code>ServerBusy</Code></Error>", status_code=503, media_type="application/xml")
        size = blob.stat().st_size if isinstance(blob, Path) else len(blob)
        return StreamingResponse(_chunks(blob), media_type="application/zip", headers={"Content-Length": str(size)})

    def release_view(request: Request, release: dict[str, Any]) -> dict[str, Any]:
        assets = [state.assets[a] for a in release["_assets"] if a in state.assets]
        return {k: v for k, v in release.items() if not k.startswith("_")} | {"assets": assets}

    async def create_release(request: Request) -> JSONResponse:
        p = request.path_params
        body = await request.json()
        tag = body.get("tag_name")
        if not tag:
            return JSONResponse(
                {"message": "Validation Failed", "errors": [{"field": "tag_name", "code": "missing"}]}, status_code=422
            )
        with state.lock:
            for release in state.releases.values():
                if (release["_owner"], release["_repo"], release["tag_name"]) == (p["owner"], p["repo"], tag):
                    return JSONResponse(
                        {
                            "message": "Validation Failed",
                            "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}],
                        },
                        status_code=422,
                    )
            release_id = state.next_id()
            release = {
                "id": release_id,
                "tag_name": tag,
                "name": body.get("name") or tag,
                "body": body.get("body") or "",
                "prerelease": bool(body.get("prerelease")),
                "draft": bool(body.get("draft")),
                "html_url": f"{str(request.base_url).rstrip('/')}/{p['owner']}/{p['repo']}/releases/tag/{tag}",
                "upload_url": f"{_base(request)}/uploads/repos/{p['owner']}/{p['repo']}/releases/{release_id}"
                "/assets{?name,label}",
                "_owner": p["owner"],
                "_repo": p["repo"],
                "_assets": [],
            }
            state.releases[release_id] = release
            return JSONResponse(release_view(request, release), status_code=201)

    async def release_by_tag(request: Request) -> JSONResponse:
        p = request.path_params
        with state.lock:
            for release in state.releases.values():
                if (release["_owner"], release["_repo"], release["tag_name"]) == (p["owner"], p["repo"], p["tag"]):
                    return JSONResponse(release_view(request, release))
        return _not_found()

    async def release_assets(request: Request) -> JSONResponse:
        with state.lock:
            release = state.releases.get(int(request.path_params["release_id"]))
            if release is None:
                return _not_found()
            return JSONResponse(release_view(request, release)["assets"])

    async def upload_asset(request: Request) -> JSONResponse:
        p = request.path_params
        name = request.query_params.get("name")
        # Streamed to a file, as a large asset would be.
        digest, size = hashlib.sha256(), 0
        handle, stored = tempfile.mkstemp(dir=upload_dir)
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        with state.lock:
            release = state.releases.get(int(p["release_id"]))
            if release is None:
                return _not_found()
            if not name:
                return JSONResponse({"message": "name is required"}, status_code=422)
            if any(state.assets[a]["name"] == name for a in release["_assets"] if a in state.assets):
                return JSONResponse(
                    {
                        "message": "Validation Failed",
                        "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}],
                    },
                    status_code=422,
                )
            asset_id = state.next_id()
            state.blobs[asset_id] = Path(stored)  # type: ignore[assignment]
            asset = {
                "id": asset_id,
                "name": name,
                "size": size,
                "state": "uploaded",
                "content_type": request.headers.get("content-type", "application/octet-stream"),
                "digest": "sha256:" + digest.hexdigest(),
                "browser_download_url": f"{_base(request)}/_storage/{asset_id}",
            }
            state.assets[asset_id] = asset
            release["_assets"].append(asset_id)
        return JSONResponse(asset, status_code=201)

    async def delete_asset(request: Request) -> Response:
        with state.lock:
            if state.assets.pop(int(request.path_params["asset_id"]), None) is None:
                return _not_found()
        return Response(status_code=204)

    async def configure(request: Request) -> JSONResponse:
        body = await request.json()
        with state.lock:
            for key in ("default_duration_s", "supports_return_run_details", "storage_failures", "app"):
                if key in body:
                    state.github_config[key] = body[key]
            state.github_config.setdefault("_tokens", {})
            state.github_config.setdefault("_exchanges", 0)
            for repo, cfg in (body.get("repos") or {}).items():
                state.github_config["repos"][repo] = dict(cfg)
            public = {k: v for k, v in state.github_config.items() if not k.startswith("_")}
            return JSONResponse(public | {"token_exchanges": state.github_config["_exchanges"]})

    a = authenticated
    return [
        Route(REPO + "/actions/workflows/{workflow}/dispatches", a(dispatch), methods=["POST"]),
        Route(REPO + "/dispatches", a(repository_dispatch), methods=["POST"]),
        Route(REPO + "/actions/runs", a(list_runs), methods=["GET"]),
        Route(REPO + "/actions/workflows/{workflow}/runs", a(list_runs), methods=["GET"]),
        Route(REPO + "/actions/runs/{run_id:int}", a(get_run), methods=["GET"]),
        Route(REPO + "/actions/runs/{run_id:int}/artifacts", a(run_artifacts), methods=["GET"]),
        Route(REPO + "/actions/artifacts/{artifact_id:int}/zip", a(artifact_zip), methods=["GET"]),
        Route(PREFIX + "/_storage/{blob_id:int}", storage, methods=["GET"]),  # pre-signed: no token
        Route(REPO + "/releases", a(create_release), methods=["POST"]),
        Route(REPO + "/releases/tags/{tag:path}", a(release_by_tag), methods=["GET"]),
        Route(REPO + "/releases/{release_id:int}/assets", a(release_assets), methods=["GET"]),
        Route(
            PREFIX + "/uploads/repos/{owner}/{repo}/releases/{release_id:int}/assets",
            a(upload_asset),
            methods=["POST"],
        ),
        Route(REPO + "/releases/assets/{asset_id:int}", a(delete_asset), methods=["DELETE"]),
        Route(PREFIX + "/app/installations/{installation_id}/access_tokens", access_token, methods=["POST"]),
        Route("/_sandbox/github/config", configure, methods=["POST"]),
        Route("/_sandbox/github/revoke-tokens", revoke_tokens, methods=["POST"]),
    ]
