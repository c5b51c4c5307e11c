"""Release builds, as ops follow them: each release and its per-repository builds; and a release
started by hand (the same trigger a GitHub `release` webhook queues)."""

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import require_platform
from api.openapi import Answer, Endpoint
from api.params import Integer, Text
from api.problems import Problem
from api.requests import engine, json_body
from domain.core import lifecycle
from domain.core.lifecycle import Actor
from domain.core.models import BuildStatus, ReleaseBuild, RepoBuild
from domain.core.store import read_transaction, transaction
from domain.queue import queue
from domain.queue.triggers import ReleaseTrigger
from domain.release import release as rel
from domain.release.release_graph import InvalidGraph, load_graph

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


# The release graph's repositories, named in /openapi.json (the validator below is what refuses others).
RepositoryName = Annotated[str, Field(json_schema_extra={"enum": load_graph().order})]


class ReleaseStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(min_length=1, max_length=200, description="a git tag name")
    name: str | None = Field(default=None, max_length=300, description="default: the tag")
    prerelease: StrictBool = False
    repositories: list[RepositoryName] | None = Field(
        default=None, min_length=1, max_length=100, description="only these and their dependencies (default: all)"
    )

    @field_validator("tag")
    @classmethod
    def _git_ref_name(cls, tag: str) -> str:
        return rel.validate_tag(tag)

    @field_validator("repositories")
    @classmethod
    def _known(cls, repositories: list[str] | None) -> list[str] | None:
        if repositories is not None:
            try:
                load_graph().subset(repositories)
            except InvalidGraph as exc:
                raise ValueError(str(exc)) from exc
        return repositories


class ReleaseQueued(BaseModel):
    status: Literal["queued", "already_queued"]
    tag: str
    trigger_id: int | None
    release_id: str | None
    follow: dict[str, str]


TAG = Text("tag", description="only the release of this tag")
LIMIT = Integer("limit", 100, 1, 200)


def _view(release: ReleaseBuild, builds: list[RepoBuild] | None = None) -> dict[str, Any]:
    out = ReleaseOut.model_validate(release, from_attributes=True)
    if builds is not None:
        out.builds = [RepoBuildOut.model_validate(b, from_attributes=True) for b in builds]
    return out.model_dump(mode="json", exclude={"builds"} if builds is None else None)


def queue_release(session: Session, trigger: ReleaseTrigger) -> dict[str, Any]:
    """Queue a release build of `trigger.tag`, or answer `already_queued` (with the live trigger's id and
    the release's when it is pending or running): one way for the webhook and a start by hand."""
    tag = trigger.tag
    trigger_id = queue.live_id(session, "release", f"release:{tag}")
    release = session.scalars(select(ReleaseBuild).where(ReleaseBuild.tag == tag)).one_or_none()
    in_flight = release is not None and release.status in (BuildStatus.PENDING.value, BuildStatus.RUNNING.value)
    if trigger_id is not None or in_flight:
        return {
            "status": "already_queued",
            "trigger_id": trigger_id,
            "release_id": release.id if in_flight and release is not None else None,
        }
    try:
        trigger_id = queue.enqueue(session, "release", None, trigger.model_dump(), dedup_key=f"release:{tag}")
    except queue.DedupConflict as exc:  # queued by a request committed since we looked
        return {"status": "already_queued", "trigger_id": exc.existing_id, "release_id": None}
    return {"status": "queued", "trigger_id": trigger_id, "release_id": None}


async def start_release(request: Request) -> JSONResponse:
    principal = require_platform(request, RELEASE_ROLES)
    body = await json_body(request, ReleaseStart)
    trigger = ReleaseTrigger(
        tag=body.tag, name=body.name, prerelease=body.prerelease, repositories=body.repositories, source="api"
    )

    def apply() -> dict[str, Any]:
        with transaction(engine(request)) as session:
            answer = queue_release(session, trigger)
            if answer["status"] == "queued":
                lifecycle.record(
                    session,
                    tenant_id=None,
                    entity_type="trigger_queue",
                    entity_id=str(answer["trigger_id"]),
                    action="release_requested",
                    actor=Actor.user(principal.sub),
                    metadata={"tag": body.tag, "repositories": body.repositories},
                )
            return answer

    answer = await run_in_threadpool(apply)
    follow = {"releases": f"/v1/releases?tag={quote(body.tag, safe='')}"}
    if answer["trigger_id"] is not None:
        follow["trigger"] = f"/v1/queue/{answer['trigger_id']}"
    body_out = ReleaseQueued.model_validate(answer | {"tag": body.tag, "follow": follow})
    return JSONResponse(body_out.model_dump(mode="json"), status_code=202 if answer["status"] == "queued" else 200)


async def list_releases(request: Request) -> JSONResponse:
    require_platform(request, RELEASE_ROLES)
    tag, limit = TAG.read(request), LIMIT.read(request)

    def load() -> list[dict[str, Any]]:
        with read_transaction(engine(request)) as session:
            query = select(ReleaseBuild).order_by(ReleaseBuild.created_at.desc()).limit(limit)
            if tag is not None:
                query = query.where(ReleaseBuild.tag == tag)
            return [_view(r) for r in session.scalars(query).all()]

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
        "POST",
        "/v1/releases",
        start_release,
        "Start (or resume) a release build of a tag: queued as a GitHub release webhook queues it (audited)",
        request=ReleaseStart,
        response=ReleaseQueued,
        status=202,
        answers=[Answer(200, "The tag's release is already queued, pending or running", ReleaseQueued)],
        tags=["releases"],
    ),
    Endpoint(
        "GET",
        "/v1/releases",
        list_releases,
        "The latest release builds, newest first (?tag= for one tag's)",
        response=ReleaseList,
        query=[TAG, LIMIT],
        tags=["releases"],
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
