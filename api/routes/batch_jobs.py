"""Batch jobs' messages: the latest `workflow.job.trigger` messages in the outbox, newest first."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import OPS_ROLES, require_platform
from api.openapi import Endpoint
from api.problems import Problem
from api.request_rules import integer_param
from api.requests import engine
from domain.batch import batch_jobs
from domain.core.models import OutboundMessage
from domain.core.store import read_transaction

MAX_LIMIT = 500
JOB_NAMES = {job.name for job in batch_jobs.JOBS}


class BatchMessage(BaseModel):
    message_id: str
    type: str
    job: str
    queue: str
    exchange: str
    status: str
    body: dict[str, Any]
    headers: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: datetime
    published_at: datetime | None


class BatchMessages(BaseModel):
    messages: list[BatchMessage]


def message_view(row: OutboundMessage) -> dict[str, Any]:
    return BatchMessage.model_validate(row, from_attributes=True).model_dump(mode="json")


def parse_job(raw: str | None) -> str | None:
    """A job by its hyphenated name (as in the messages) or its asset name; None for all jobs."""
    if not raw:
        return None
    name = raw.replace("_", "-")
    if name not in JOB_NAMES:
        raise Problem(
            422,
            "validation_error",
            f"unknown batch job {raw!r}",
            errors=[{"field": "job", "message": f"one of {sorted(JOB_NAMES)}"}],
        )
    return name


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 50
    limit = integer_param(raw, 1, MAX_LIMIT)
    if limit is None:
        raise Problem(
            422,
            "validation_error",
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            errors=[{"field": "limit", "message": f"an integer from 1 to {MAX_LIMIT}"}],
        )
    return limit


async def list_messages(request: Request) -> JSONResponse:
    # Batch-job triggers belong to no tenant: platform ops roles only.
    require_platform(request, OPS_ROLES)
    job = parse_job(request.query_params.get("job"))
    limit = parse_limit(request.query_params.get("limit"))

    def load() -> list[dict[str, Any]]:
        with read_transaction(engine(request)) as session:
            return [message_view(row) for row in batch_jobs.latest(session, job=job, limit=limit)]

    return JSONResponse({"messages": await run_in_threadpool(load)})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/batch-jobs/messages",
        list_messages,
        "The latest batch-job trigger messages (workflow.job.trigger), newest first",
        response=BatchMessages,
        query=["job", "limit"],
        errors=[422],
        tags=["batch-jobs"],
    ),
]
