"""Release builds, as ops follow them: each release and its per-repository builds."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_platform
from api.openapi import Endpoint
from api.problems import Problem
from api.requests import engine
from domain.core.models import ReleaseBuild, RepoBuild
from domain.core.store import read_transaction

# Releases are platform-wide (no tenant): only these roles see them.
RELEASE_ROLES = frozenset({"ops_release", "ops_admin", "admin"})


class RepoBuildOut(BaseModel):
    repository: str
    status: str
    attempts: int
    github_run_id: str | None
    github_run_url: str | None
    conclusion: str | None
    artifacts: list[Any]
    checksums: dict[str, Any]
    error: str | None
    updated_at: datetime


class ReleaseOut(BaseModel):
    id: str
    tag: str
    name: str
    prerelease: bool
    status: str
    repositories: list[Any]
    dagster_run_id: str | None
    github_release_url: str | None
    archive_sha256: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    builds: list[RepoBuildOut] | None = None


class ReleaseList(BaseModel):
    releases: list[ReleaseOut]


def _view(release: ReleaseBuild, builds: list[RepoBuild] | None = None) -> dict[str, Any]:
    out = ReleaseOut.model_validate(release, from_attributes=True)
    if builds is not None:
        out.builds = [RepoBuildOut.model_validate(b, from_attributes=True) for b in builds]
    return out.model_dump(mode="json", exclude={"builds"} if builds is None else None)


async def list_releases(request: Request) -> JSONResponse:
    require_platform(request, RELEASE_ROLES)

    def load() -> list[dict[str, Any]]:
        with read_transaction(engine(request)) as session:
            rows = session.scalars(select(ReleaseBuild).order_by(ReleaseBuild.created_at.desc()).limit(100)).all()
            return [_view(r) for r in rows]

    return JSONResponse({"releases": await run_in_threadpool(load)})


async def get_release(request: Request) -> JSONResponse:
    require_platform(request, RELEASE_ROLES)
    release_id = request.path_params["release_id"]

    def load() -> dict[str, Any] | None:
        with read_transaction(engine(request)) as session:
            release = session.get(ReleaseBuild, release_id)
            if release is None:
                return None
            builds = session.scalars(
                select(RepoBuild).where(RepoBuild.release_build_id == release.id).order_by(RepoBuild.repository)
            ).all()
            return _view(release, list(builds))

    found = await run_in_threadpool(load)
    if found is None:
        raise Problem(404, "not_found", f"release {release_id} not found")
    return JSONResponse(found)


ENDPOINTS = [
    Endpoint(
        "GET", "/v1/releases", list_releases, "The latest release builds", response=ReleaseList, tags=["releases"]
    ),
    Endpoint(
        "GET",
        "/v1/releases/{release_id}",
        get_release,
        "One release build with its repository builds",
        response=ReleaseOut,
        errors={404: ["not_found"]},
        tags=["releases"],
    ),
]
